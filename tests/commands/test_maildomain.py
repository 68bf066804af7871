"""manage.py maildomain add|remove|list."""
import pytest
from django.core.management.base import CommandError

from mailhub.models import Alias, Domain, Mailbox, MailboxMessage

from .running import run, spool_snapshot

pytestmark = pytest.mark.django_db


def test_add_creates_domain():
    output = run("maildomain", "add", "Example.COM")

    assert Domain.objects.get().name == "example.com"
    assert Domain.objects.get().active is True
    assert "domain example.com added" in output


def test_add_unicode_domain_as_a_label():
    run("maildomain", "add", "bücher.example")

    assert Domain.objects.get().name == "xn--bcher-kva.example"


def test_add_inactive():
    run("maildomain", "add", "example.com", "--inactive")

    assert Domain.objects.get().active is False


def test_add_existing_fails():
    run("maildomain", "add", "example.com")

    with pytest.raises(CommandError, match="already exists"):
        run("maildomain", "add", "EXAMPLE.com")


def test_add_invalid_name_fails():
    with pytest.raises(CommandError, match="invalid domain 'localhost'"):
        run("maildomain", "add", "localhost")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad..test", "empty label"),
        ("*.example.com", "wildcard"),
        ("bad domain.test", "space"),
        ("127.0.0.1", "IP address"),
        ("[127.0.0.1]", "address literal"),
        ("under_score.test", "invalid label"),
        ("a" * 64 + ".test", "longer than 63"),
        (("a" * 60 + ".") * 5 + "test", "longer than 253"),
        ("xn--zz.test", "not a valid internationalised domain name"),
    ],
)
def test_add_rejects_invalid_names(name, reason):
    with pytest.raises(CommandError, match=reason):
        run("maildomain", "add", name)

    assert Domain.objects.count() == 0


def test_add_prints_postmaster_hint():
    output = run("maildomain", "add", "example.com")

    assert "no postmaster@example.com yet" in output
    assert "manage.py mailalias add postmaster@example.com you@example.com" in output


def test_add_with_postmaster_alias():
    output = run("maildomain", "add", "example.com", "--postmaster", "admin@remote.test")

    alias = Alias.objects.get()
    assert alias.source == "postmaster@example.com"
    assert alias.destination_list() == ["admin@remote.test"]
    assert "alias postmaster@example.com added, to admin@remote.test" in output
    assert "no postmaster" not in output


@pytest.mark.parametrize(
    ("postmaster", "reason"),
    [("admin@@remote.test", "exactly one '@'"), ("postmaster@example.com", "loops back")],
)
def test_add_with_invalid_postmaster_adds_nothing(postmaster, reason):
    with pytest.raises(CommandError, match=f"postmaster alias is invalid: .*{reason}"):
        run("maildomain", "add", "example.com", "--postmaster", postmaster)

    assert Domain.objects.count() == 0
    assert Alias.objects.count() == 0


def test_remove_empty_domain():
    run("maildomain", "add", "example.com")

    output = run("maildomain", "remove", "example.com")

    assert Domain.objects.count() == 0
    assert "domain example.com removed" in output


def test_remove_unknown_domain_fails():
    with pytest.raises(CommandError, match="maildomain add nowhere.test"):
        run("maildomain", "remove", "nowhere.test")


@pytest.fixture
def populated_domain():
    domain = Domain.objects.create(name="example.com")
    mailbox = Mailbox.objects.create(domain=domain, local_part="bob")
    MailboxMessage.objects.create(mailbox=mailbox, raw=b"Subject: hi\r\n\r\nBody\r\n", size=22)
    Alias.objects.create(domain=domain, local_part="info", destinations="bob@example.com")
    return domain


def test_remove_with_mailboxes_needs_cascade(populated_domain):
    with pytest.raises(CommandError, match="1 mailboxes and 1 aliases; remove them first, or pass --cascade"):
        run("maildomain", "remove", "example.com")

    assert Domain.objects.count() == 1


def test_remove_cascade_deletes_everything(populated_domain):
    run("maildomain", "remove", "example.com", "--cascade")

    assert Domain.objects.count() == 0
    assert Mailbox.objects.count() == 0
    assert Alias.objects.count() == 0
    assert MailboxMessage.objects.count() == 0


def test_remove_dry_run_touches_nothing(populated_domain):
    before = spool_snapshot()

    output = run("maildomain", "remove", "example.com", "--cascade", "--dry-run")

    assert spool_snapshot() == before
    assert "would delete domain example.com, 1 mailboxes with 1 stored messages, and 1 aliases" in output
    assert "bob@example.com" in output
    assert "info@example.com" in output


def test_list_shows_counts(populated_domain):
    Domain.objects.create(name="other.test", active=False)

    lines = run("maildomain", "list").splitlines()

    assert lines[0].split() == ["DOMAIN", "ACTIVE", "MAILBOXES", "ALIASES"]
    assert lines[1].split() == ["example.com", "yes", "1", "1"]
    assert lines[2].split() == ["other.test", "no", "0", "0"]


def test_list_empty():
    assert "no domains" in run("maildomain", "list")
