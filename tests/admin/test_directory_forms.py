"""The add forms of domains, mailboxes and aliases: duplicates and invalid values are form errors."""
import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from mailhub.models import Alias, Domain, Mailbox

pytestmark = pytest.mark.django_db

ADD_DOMAIN = reverse("admin:mailhub_domain_add")
ADD_MAILBOX = reverse("admin:mailhub_mailbox_add")
ADD_ALIAS = reverse("admin:mailhub_alias_add")
CREATED_AT = {"created_at_0": "2026-01-02", "created_at_1": "03:04:05"}


@pytest.fixture
def domain():
    return Domain.objects.create(name="example.test")


def post_domain(client, name):
    return client.post(ADD_DOMAIN, {"name": name, "active": "on", **CREATED_AT})


def post_mailbox(client, domain, local_part):
    return client.post(ADD_MAILBOX, {"domain": domain.pk, "local_part": local_part, "active": "on", **CREATED_AT})


def post_alias(client, domain, local_part, destinations, **extra):
    data = {"domain": domain.pk, "local_part": local_part, "destinations": destinations, "active": "on", **CREATED_AT}
    return client.post(ADD_ALIAS, {**data, **extra})


def form_errors(response):
    """Return every error of the admin form as one string, or fail if the form was accepted."""
    assert response.status_code == 200, "the form was accepted"
    form = response.context["adminform"].form
    return " ".join(str(message) for messages in form.errors.values() for message in messages)


def test_duplicate_mailbox_is_form_error(operator_client, domain):
    assert post_mailbox(operator_client, domain, "alice").status_code == 302

    response = post_mailbox(operator_client, domain, "Alice")

    assert "mailbox alice@example.test already exists" in form_errors(response)
    assert Mailbox.objects.count() == 1


def test_duplicate_alias_is_form_error(operator_client, domain):
    assert post_alias(operator_client, domain, "postmaster", "bob@remote.test").status_code == 302

    response = post_alias(operator_client, domain, "postmaster", "carol@remote.test")

    assert "alias postmaster@example.test already exists" in form_errors(response)
    assert Alias.objects.count() == 1


def test_duplicate_domain_in_other_case_is_form_error(operator_client, domain):
    response = post_domain(operator_client, "EXAMPLE.TEST")

    assert "already exists" in form_errors(response)
    assert Domain.objects.count() == 1


def test_unicode_domain_stored_as_a_label(operator_client):
    assert post_domain(operator_client, "Bücher.Example").status_code == 302

    assert Domain.objects.get().name == "xn--bcher-kva.example"


def test_duplicate_unicode_domain_is_form_error(operator_client):
    Domain.objects.create(name="xn--bcher-kva.example")

    response = post_domain(operator_client, "bücher.example")

    assert "already exists" in form_errors(response)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad..test", "empty label"),
        ("*.example.test", "wildcard"),
        ("a b.test", "space"),
        ("127.0.0.1", "IP address"),
        ("[127.0.0.1]", "address literal"),
        ("localhost", "two labels"),
        ("-bad.test", "invalid label"),
        ("a" * 64 + ".test", "longer than 63"),
    ],
)
def test_invalid_domain_is_form_error(operator_client, name, reason):
    response = post_domain(operator_client, name)

    assert reason in form_errors(response)
    assert Domain.objects.count() == 0


@pytest.mark.parametrize(
    ("local_part", "reason"),
    [
        ("a b", "space"),
        ("<script>", "contains '<'"),
        (".alice", "starts or ends with a dot"),
        ("alice.", "starts or ends with a dot"),
        ("al..ice", "two dots"),
        ('"alice"', "quoted local part"),
        ("alice@example.test", "contains '@'"),
    ],
)
def test_invalid_local_part_is_form_error(operator_client, domain, local_part, reason):
    response = post_mailbox(operator_client, domain, local_part)

    assert reason in form_errors(response)
    assert Mailbox.objects.count() == 0


def test_invalid_alias_destination_is_form_error(operator_client, domain):
    response = post_alias(operator_client, domain, "info", "bob@remote.test\nbob@@remote.test")

    assert "invalid address 'bob@@remote.test'" in form_errors(response)
    assert Alias.objects.count() == 0


def test_self_alias_is_form_error(operator_client, domain):
    response = post_alias(operator_client, domain, "info", "info@example.test")

    assert "loops back: info@example.test -> info@example.test" in form_errors(response)
    assert Alias.objects.count() == 0


def test_alias_loop_is_form_error(operator_client, domain):
    Alias.objects.create(domain=domain, local_part="ping", destinations="pong@example.test")

    response = post_alias(operator_client, domain, "pong", "ping@example.test")

    assert "loops back: pong@example.test -> ping@example.test -> pong@example.test" in form_errors(response)
    assert Alias.objects.count() == 1


def test_alias_over_mailbox_needs_confirmation(operator_client, domain):
    Mailbox.objects.create(domain=domain, local_part="bob")

    refused = post_alias(operator_client, domain, "bob", "carol@remote.test")
    confirmed = post_alias(operator_client, domain, "bob", "carol@remote.test", replaces_mailbox="on")

    assert "bob@example.test is a mailbox address" in form_errors(refused)
    assert confirmed.status_code == 302
    assert Alias.objects.get().source == "bob@example.test"


def test_domain_without_postmaster_warns(operator_client):
    response = post_domain(operator_client, "example.test")

    warnings = [str(message) for message in get_messages(response.wsgi_request)]
    assert any("no postmaster@example.test yet" in warning for warning in warnings)


def test_mailbox_at_alias_source_is_form_error(operator_client, domain):
    assert post_alias(operator_client, domain, "bob", "carol@remote.test").status_code == 302

    response = post_mailbox(operator_client, domain, "bob")

    assert "an alias already uses bob@example.test" in form_errors(response)
    assert not Mailbox.objects.exists()
