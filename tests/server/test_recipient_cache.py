"""The listeners' memory of deliverable recipients: only what the directory accepted, for a short time."""
import pytest

from mailhub.models import Mailbox
from mailhub.server import replies
from mailhub.server.recipient_cache import MAX_ENTRIES, RecipientCache

pytestmark = pytest.mark.django_db(transaction=True)


def rcpt_reply(mail_listeners, address, name="mx"):
    with mail_listeners.smtp(name) as client:
        client.ehlo()
        client.mail("sender@remote.test")
        code, _text = client.rcpt(address)
        return code


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_remembered_address_expires_after_ttl(settings):
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 10
    clock = Clock()
    cache = RecipientCache(clock)

    cache.remember_deliverable("alice@local.test")
    clock.now += 9.9
    remembered_before = cache.is_deliverable("alice@local.test")
    clock.now += 0.2

    assert remembered_before
    assert not cache.is_deliverable("alice@local.test")
    assert not cache.is_deliverable("bob@local.test")


def test_ttl_zero_remembers_nothing(settings):
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 0
    cache = RecipientCache()

    cache.remember_deliverable("alice@local.test")

    assert not cache.is_deliverable("alice@local.test")


def test_full_cache_starts_over(settings):
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 10
    cache = RecipientCache()
    for number in range(MAX_ENTRIES):
        cache.remember_deliverable(f"user{number}@local.test")

    cache.remember_deliverable("late@local.test")

    assert len(cache.expiry_by_address) == 1
    assert cache.is_deliverable("late@local.test")


def test_new_mailbox_takes_mail_at_once(mail_listeners, directory):
    rejected = rcpt_reply(mail_listeners, "carol@local.test")
    Mailbox.objects.create(domain=directory.domain, local_part="carol")

    assert rejected == replies.UNKNOWN_USER.code
    assert rcpt_reply(mail_listeners, "carol@local.test") == 250


def test_deactivated_mailbox_accepted_from_memory_within_ttl(mail_listeners, directory, settings):
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 3600
    accepted = rcpt_reply(mail_listeners, "bob@local.test")
    Mailbox.objects.filter(pk=directory.bob_mailbox.pk).update(active=False)

    assert accepted == 250
    assert rcpt_reply(mail_listeners, "bob@local.test") == 250


def test_deactivated_mailbox_rejected_at_once_without_cache(mail_listeners, directory, settings):
    settings.MAILHUB_SERVER_RECIPIENT_CACHE_SECONDS = 0
    accepted = rcpt_reply(mail_listeners, "bob@local.test")
    Mailbox.objects.filter(pk=directory.bob_mailbox.pk).update(active=False)

    assert accepted == 250
    assert rcpt_reply(mail_listeners, "bob@local.test") == replies.UNKNOWN_USER.code


def test_relay_for_a_trusted_client_is_not_remembered(mail_listeners, directory, settings):
    settings.MAILHUB_TRUSTED_NETWORKS = ["127.0.0.0/8"]
    relayed = rcpt_reply(mail_listeners, "someone@remote.test")
    settings.MAILHUB_TRUSTED_NETWORKS = []

    assert relayed == 250
    assert rcpt_reply(mail_listeners, "someone@remote.test") == replies.RELAY_DENIED.code
