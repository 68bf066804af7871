"""manage.py mailbox add|remove|list|passwd."""
import logging

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management.base import CommandError

from mailhub.models import Domain, Mailbox, MailboxMessage

from .running import run, spool_snapshot

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


class Terminal:
    """A stdin that reports a terminal, so the command prompts for the password."""

    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def domain():
    return Domain.objects.create(name="example.com")


@pytest.fixture
def typed_passwords(monkeypatch):
    """Answer getpass prompts with the given strings in order; return the prompts shown."""
    answers = []
    prompts = []

    def fake_getpass(prompt):
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr("getpass.getpass", fake_getpass)

    def type_passwords(*passwords):
        answers.extend(passwords)
        return prompts

    return type_passwords


def test_add_creates_user(caplog):
    caplog.set_level(logging.DEBUG)

    output = run("mailbox", "add", "Bob@Example.com", "--password", PASSWORD)

    mailbox = Mailbox.objects.get()
    assert mailbox.address == "bob@example.com"
    assert mailbox.user.get_username() == "bob@example.com"
    assert mailbox.user.email == "bob@example.com"
    assert authenticate(username="bob@example.com", password=PASSWORD) == mailbox.user
    assert "owned by new user bob@example.com" in output
    assert PASSWORD not in output
    assert PASSWORD not in caplog.text


def test_add_prompts_for_password(typed_passwords, capsys):
    prompts = typed_passwords(PASSWORD, PASSWORD)

    output = run("mailbox", "add", "bob@example.com", stdin=Terminal())

    assert prompts == ["Password: ", "Password (again): "]
    assert authenticate(username="bob@example.com", password=PASSWORD) is not None
    assert PASSWORD not in output
    assert PASSWORD not in capsys.readouterr().out


def test_add_prompt_mismatch_fails(typed_passwords):
    typed_passwords(PASSWORD, "something else entirely")

    with pytest.raises(CommandError, match="passwords do not match"):
        run("mailbox", "add", "bob@example.com", stdin=Terminal())

    assert Mailbox.objects.count() == 0
    assert get_user_model().objects.count() == 0


def test_add_without_terminal_needs_password():
    with pytest.raises(CommandError, match="pass --password"):
        run("mailbox", "add", "bob@example.com")

    assert Mailbox.objects.count() == 0


def test_add_weak_password_fails():
    with pytest.raises(CommandError, match="password is not accepted"):
        run("mailbox", "add", "bob@example.com", "--password", "short")

    assert get_user_model().objects.count() == 0


def test_add_links_existing_user():
    user = get_user_model().objects.create_user("bob", password=PASSWORD)

    output = run("mailbox", "add", "bob@example.com", "--user", "bob")

    assert Mailbox.objects.get().user == user
    assert authenticate(username="bob", password=PASSWORD) == user
    assert "owned by existing user bob" in output


def test_add_existing_user_keeps_password():
    get_user_model().objects.create_user("bob", password=PASSWORD)

    with pytest.raises(CommandError, match="keeps its password"):
        run("mailbox", "add", "bob@example.com", "--user", "bob", "--password", "another long password")

    assert Mailbox.objects.count() == 0


def test_add_unknown_domain_fails():
    with pytest.raises(CommandError, match="'manage.py maildomain add other.test'"):
        run("mailbox", "add", "bob@other.test", "--password", PASSWORD)


def test_add_existing_mailbox_fails():
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)

    with pytest.raises(CommandError, match="already exists"):
        run("mailbox", "add", "BOB@example.com", "--password", PASSWORD)


def test_add_at_alias_source_fails_without_user():
    run("mailalias", "add", "bob@example.com", "carol@remote.test")

    with pytest.raises(CommandError, match="an alias already uses bob@example.com"):
        run("mailbox", "add", "bob@example.com", "--password", PASSWORD)

    assert not Mailbox.objects.exists()
    assert not get_user_model().objects.filter(username="bob@example.com").exists()


def test_add_invalid_address_fails():
    with pytest.raises(CommandError, match="user@example.com"):
        run("mailbox", "add", "bob", "--password", PASSWORD)


def test_remove_deletes_stored_mail():
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)
    MailboxMessage.objects.create(mailbox=Mailbox.objects.get(), raw=b"Subject: hi\r\n\r\nBody\r\n", size=22)

    output = run("mailbox", "remove", "bob@example.com")

    assert Mailbox.objects.count() == 0
    assert MailboxMessage.objects.count() == 0
    assert get_user_model().objects.count() == 1
    assert "removed with 1 stored messages" in output


def test_remove_dry_run_touches_nothing():
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)
    MailboxMessage.objects.create(mailbox=Mailbox.objects.get(), raw=b"Subject: hi\r\n\r\nBody\r\n", size=22)
    before = spool_snapshot()

    output = run("mailbox", "remove", "bob@example.com", "--dry-run")

    assert spool_snapshot() == before
    assert "would remove mailbox bob@example.com with 1 stored messages" in output


def test_remove_unknown_fails():
    with pytest.raises(CommandError, match="mailbox list"):
        run("mailbox", "remove", "nobody@example.com")


def test_list_mailboxes():
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)
    Mailbox.objects.create(domain=Domain.objects.get(), local_part="nobody", active=False)
    MailboxMessage.objects.create(mailbox=Mailbox.objects.get(local_part="bob"), raw=b"x" * 10, size=10)
    MailboxMessage.objects.create(mailbox=Mailbox.objects.get(local_part="bob"), raw=b"x" * 5, size=5)

    lines = run("mailbox", "list").splitlines()

    assert lines[0].split() == ["MAILBOX", "USER", "ACTIVE", "MESSAGES", "BYTES"]
    assert lines[1].split() == ["bob@example.com", "bob@example.com", "yes", "2", "15"]
    assert lines[2].split() == ["nobody@example.com", "-", "no", "0", "0"]


def test_passwd_changes_password():
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)

    output = run("mailbox", "passwd", "bob@example.com", "--password", "a new long password")

    assert authenticate(username="bob@example.com", password="a new long password") is not None
    assert authenticate(username="bob@example.com", password=PASSWORD) is None
    assert "password changed for user bob@example.com" in output
    assert "a new long password" not in output


def test_passwd_prompts(typed_passwords):
    run("mailbox", "add", "bob@example.com", "--password", PASSWORD)
    typed_passwords("typed new password", "typed new password")

    run("mailbox", "passwd", "bob@example.com", stdin=Terminal())

    assert authenticate(username="bob@example.com", password="typed new password") is not None


def test_passwd_without_user_fails():
    Mailbox.objects.create(domain=Domain.objects.get(), local_part="nobody")

    with pytest.raises(CommandError, match="has no owning user"):
        run("mailbox", "passwd", "nobody@example.com", "--password", PASSWORD)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("a b@example.com", "contains a space"),
        ("<script>@example.com", "contains '<'"),
        ("bob@@example.com", "contains '@'"),
        (".bob@example.com", "starts or ends with a dot"),
        ("bo..b@example.com", "two dots"),
        ('"bob"@example.com', "quoted local part"),
        ("b" * 65 + "@example.com", "longer than 64 octets"),
    ],
)
def test_add_invalid_address_creates_no_user(address, reason):
    with pytest.raises(CommandError, match=f"not added: .*{reason}"):
        run("mailbox", "add", address, "--password", PASSWORD)

    assert Mailbox.objects.count() == 0
    assert get_user_model().objects.count() == 0
