"""manage.py mailalias add|remove|list."""
import pytest
from django.core.management.base import CommandError

from mailhub import directory
from mailhub.models import Alias, Domain, Mailbox

from .running import run, spool_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def domain():
    domain = Domain.objects.create(name="example.com")
    Mailbox.objects.create(domain=domain, local_part="bob")
    return domain


def test_add_alias_expands():
    output = run("mailalias", "add", "Info@Example.com", "bob@example.com", "carol@remote.test")

    alias = Alias.objects.get()
    assert alias.source == "info@example.com"
    assert alias.destination_list() == ["bob@example.com", "carol@remote.test"]
    assert directory.expand("info@example.com") == ["bob@example.com", "carol@remote.test"]
    assert "alias info@example.com added, to bob@example.com, carol@remote.test" in output


def test_add_catch_all():
    run("mailalias", "add", "@example.com", "bob@example.com")

    alias = Alias.objects.get()
    assert alias.is_catch_all
    assert alias.source == "@example.com"
    assert directory.expand("anything@example.com") == ["bob@example.com"]


def test_add_unknown_domain_fails():
    with pytest.raises(CommandError, match="maildomain add other.test"):
        run("mailalias", "add", "info@other.test", "bob@example.com")


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        ("bob", "exactly one '@'"),
        ("bob@@remote.test", "exactly one '@'"),
        ("bo b@remote.test", "contains a space"),
        ("bob@bad..test", "empty label"),
        ("bob@[1.2.3]", "not an address literal"),
    ],
)
def test_add_invalid_destination_fails(destination, reason):
    with pytest.raises(CommandError, match=f"alias info@example.com not added: invalid address .*{reason}"):
        run("mailalias", "add", "info@example.com", "carol@remote.test", destination)

    assert Alias.objects.count() == 0


def test_add_literal_and_quoted_destinations():
    run("mailalias", "add", "info@example.com", "bob@[192.0.2.1]", '"carol smith"@remote.test')

    assert Alias.objects.get().destination_list() == ["bob@[192.0.2.1]", '"carol smith"@remote.test']


@pytest.mark.parametrize("source", ["<script>@example.com", "a..b@example.com", '"quoted"@example.com'])
def test_add_invalid_source_fails(source):
    with pytest.raises(CommandError, match="not added: .*local part"):
        run("mailalias", "add", source, "bob@example.com")

    assert Alias.objects.count() == 0


def test_add_self_alias_fails():
    with pytest.raises(CommandError, match="loops back: info@example.com -> info@example.com"):
        run("mailalias", "add", "info@example.com", "INFO@example.com")

    assert Alias.objects.count() == 0


def test_add_alias_loop_fails():
    run("mailalias", "add", "ping@example.com", "pong@example.com")
    run("mailalias", "add", "pong@example.com", "pang@example.com")

    with pytest.raises(CommandError, match="loops back: pang@example.com -> ping@example.com -> pong@example.com -> pang@example.com"):
        run("mailalias", "add", "pang@example.com", "ping@example.com")

    assert Alias.objects.count() == 2


def test_add_catch_all_to_unknown_address_fails():
    # nobody@example.com has no mailbox, so the catch-all itself would take its mail.
    with pytest.raises(CommandError, match="loops back"):
        run("mailalias", "add", "@example.com", "nobody@example.com")

    assert Alias.objects.count() == 0


def test_add_too_deep_chain_fails():
    for number in range(directory.MAX_ALIAS_DEPTH):
        run("mailalias", "add", f"hop{number}@example.com", f"hop{number + 1}@example.com")

    with pytest.raises(CommandError, match=f"deeper than {directory.MAX_ALIAS_DEPTH} levels"):
        run("mailalias", "add", "start@example.com", "hop0@example.com")


def test_add_over_mailbox_needs_force():
    with pytest.raises(CommandError, match="bob@example.com is a mailbox address.*pass --force"):
        run("mailalias", "add", "bob@example.com", "carol@remote.test")

    assert Alias.objects.count() == 0

    run("mailalias", "add", "bob@example.com", "carol@remote.test", "--force")

    assert directory.expand("bob@example.com") == ["carol@remote.test"]


def test_add_existing_fails():
    run("mailalias", "add", "info@example.com", "bob@example.com")

    with pytest.raises(CommandError, match="already exists, to bob@example.com"):
        run("mailalias", "add", "info@example.com", "carol@remote.test")


def test_remove_alias():
    run("mailalias", "add", "@example.com", "bob@example.com")

    output = run("mailalias", "remove", "@example.com")

    assert Alias.objects.count() == 0
    assert "alias @example.com removed" in output


def test_remove_dry_run_touches_nothing():
    run("mailalias", "add", "info@example.com", "bob@example.com")
    before = spool_snapshot()

    output = run("mailalias", "remove", "info@example.com", "--dry-run")

    assert spool_snapshot() == before
    assert "would remove alias info@example.com to bob@example.com" in output


def test_remove_unknown_fails():
    with pytest.raises(CommandError, match="alias 'nobody@example.com' not found"):
        run("mailalias", "remove", "nobody@example.com")


def test_list_aliases(domain):
    other = Domain.objects.create(name="other.test")
    run("mailalias", "add", "info@example.com", "bob@example.com")
    run("mailalias", "add", "@other.test", "bob@example.com")

    lines = run("mailalias", "list").splitlines()
    only_other = run("mailalias", "list", "--domain", other.name).splitlines()

    assert lines[0].split() == ["ALIAS", "ACTIVE", "DESTINATIONS"]
    assert [line.split()[0] for line in lines[1:]] == ["@other.test", "info@example.com"]
    assert [line.split()[0] for line in only_other[1:]] == ["@other.test"]
