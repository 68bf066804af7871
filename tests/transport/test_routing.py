"""Routing: local domains, the route table, the relay host and MX look-ups."""
import pytest

from mailhub.delivery.errors import PermanentDeliveryError, TemporaryDeliveryError
from mailhub.delivery.routing import parse_routes, resolve_route
from mailhub.delivery.types import RemoteHost
from mailhub.exceptions import ConfigurationError
from mailhub.models import Domain

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("remote.test=127.0.0.1:2626", {"remote.test": ("127.0.0.1", 2626)}),
        (
            "remote.test=127.0.0.1:2626, *=relay.example.net:587",
            {"remote.test": ("127.0.0.1", 2626), "*": ("relay.example.net", 587)},
        ),
        ("a.test=[mx.a.test]:2525", {"a.test": ("mx.a.test", 2525)}),
        ("a.test=[::1]:2525", {"a.test": ("::1", 2525)}),
        ("a.test=::1", {"a.test": ("::1", 25)}),
        ("a.test=relay.a.test", {"a.test": ("relay.a.test", 25)}),
        ("A.Test.=Relay.A.Test:26", {"a.test": ("relay.a.test", 26)}),
        ("bücher.test=127.0.0.1:26", {"xn--bcher-kva.test": ("127.0.0.1", 26)}),
        ({"remote.test": "127.0.0.1:2626"}, {"remote.test": ("127.0.0.1", 2626)}),
        ({"remote.test": ("127.0.0.1", 2626)}, {"remote.test": ("127.0.0.1", 2626)}),
        ("", {}),
        ({}, {}),
    ],
)
def test_parse_routes(value, expected):
    assert parse_routes(value) == expected


@pytest.mark.parametrize(
    ("value", "bad_entry"),
    [
        ("remote.test", "remote.test"),
        ("remote.test=127.0.0.1:port", "remote.test=127.0.0.1:port"),
        ("remote.test=127.0.0.1:70000", "remote.test=127.0.0.1:70000"),
        ("ok.test=127.0.0.1:25,bad.test=", "bad.test="),
        ("bad.test=[::1", "bad.test=[::1"),
        ("=127.0.0.1:25", "=127.0.0.1:25"),
    ],
)
def test_parse_routes_names_invalid_entry(value, bad_entry):
    with pytest.raises(ConfigurationError) as raised:
        parse_routes(value)

    assert repr(bad_entry) in str(raised.value)


def test_local_domain_routes_locally():
    Domain.objects.create(name="mailhub.test")

    route = resolve_route("MailHub.Test")

    assert route.kind == "local"
    assert route.domain == "mailhub.test"
    assert route.hosts == ()


def test_local_domain_wins_over_wildcard_route(settings):
    Domain.objects.create(name="mailhub.test")
    settings.MAILHUB_ROUTES = "*=127.0.0.1:2626"

    assert resolve_route("mailhub.test").kind == "local"


def test_exact_route_then_wildcard(settings):
    settings.MAILHUB_ROUTES = "remote.test=127.0.0.1:2626,*=[::1]:2727"

    exact = resolve_route("remote.test")
    other = resolve_route("other.test")

    assert exact.kind == "relay"
    assert exact.destination == "relay:127.0.0.1:2626"
    assert exact.hosts == (RemoteHost("127.0.0.1", "127.0.0.1", 2626),)
    assert exact.tls_policy == "may"
    assert exact.username == ""
    assert other.destination == "relay:[::1]:2727"
    assert other.domain == "other.test"


def test_route_wins_over_relay_host(settings):
    settings.MAILHUB_ROUTES = {"remote.test": "127.0.0.1:2626"}
    settings.MAILHUB_RELAY_HOST = "127.0.0.1:587"

    assert resolve_route("remote.test").destination == "relay:127.0.0.1:2626"
    assert resolve_route("other.test").destination == "relay:127.0.0.1:587"


def test_relay_host_with_credentials(settings, dns_server):
    settings.MAILHUB_RELAY_HOST = "smtp.relay.test:587"
    settings.MAILHUB_RELAY_USERNAME = "site"
    settings.MAILHUB_RELAY_PASSWORD = "s3cret"
    dns_server.add_host("smtp.relay.test", "127.0.0.1", "::1")

    route = resolve_route("remote.test")

    assert route.kind == "relay"
    assert route.destination == "relay:smtp.relay.test:587"
    assert route.hosts == (RemoteHost("smtp.relay.test", "127.0.0.1", 587), RemoteHost("smtp.relay.test", "::1", 587))
    assert route.tls_policy == "verify"
    assert (route.username, route.password) == ("site", "s3cret")
    assert "s3cret" not in repr(route)


def test_relay_host_not_in_dns_defers(settings, dns_server):
    settings.MAILHUB_RELAY_HOST = "missing.relay.test:587"

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_route("remote.test")

    assert "missing.relay.test" in raised.value.reply.text


def test_relay_host_from_system_hosts_file(settings, dns_server):
    settings.MAILHUB_RELAY_HOST = "localhost:2525"

    route = resolve_route("remote.test")

    assert {host.address for host in route.hosts} <= {"127.0.0.1", "::1"}
    assert "127.0.0.1" in {host.address for host in route.hosts}
    assert route.destination == "relay:localhost:2525"


def test_mx_route_from_dns(settings, dns_server):
    settings.MAILHUB_MX_PORT = 2525
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")

    route = resolve_route("remote.test")

    assert route.kind == "mx"
    assert route.destination == "mx:remote.test"
    assert route.hosts == (RemoteHost("mx1.remote.test", "127.0.0.1", 2525),)
    assert route.tls_policy == "may"


def test_tls_policies_override_per_domain_and_host(settings, dns_server):
    settings.MAILHUB_TLS_POLICIES = "remote.test=verify,127.0.0.1=encrypt"
    settings.MAILHUB_ROUTES = "routed.test=127.0.0.1:2626"
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")

    assert resolve_route("remote.test").tls_policy == "verify"
    assert resolve_route("routed.test").tls_policy == "encrypt"


def test_invalid_tls_policy_raises(settings):
    settings.MAILHUB_ROUTES = "remote.test=127.0.0.1:2626"
    settings.MAILHUB_ROUTE_TLS_POLICY = "sometimes"

    with pytest.raises(ConfigurationError) as raised:
        resolve_route("remote.test")

    assert "'sometimes'" in str(raised.value)


def test_null_mx_route_bounces(dns_server):
    dns_server.add_null_mx("nomail.test")

    with pytest.raises(PermanentDeliveryError) as raised:
        resolve_route("nomail.test")

    assert raised.value.reply.enhanced_code == "5.1.10"


def test_nxdomain_route_bounces(dns_server):
    with pytest.raises(PermanentDeliveryError) as raised:
        resolve_route("missing.test")

    assert raised.value.reply.enhanced_code == "5.1.2"


def test_servfail_route_defers(dns_server):
    dns_server.set_servfail("broken.test")

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_route("broken.test")

    assert raised.value.reply.enhanced_code == "4.4.3"
