"""MX resolution against a real DNS server on 127.0.0.1."""
import pytest

from mailhub.delivery.errors import PermanentDeliveryError, TemporaryDeliveryError
from mailhub.delivery.resolver import resolve_mx_hosts
from mailhub.delivery.types import RemoteHost


@pytest.fixture(autouse=True)
def mx_port(settings):
    settings.MAILHUB_MX_PORT = 2525
    settings.MAILHUB_ALLOW_PRIVATE_MX = True


def names(hosts):
    return [host.name for host in hosts]


def test_mx_in_preference_order(dns_server):
    dns_server.add_mx("remote.test", 20, "mx2.remote.test")
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_a("mx1.remote.test", "127.0.0.1")
    dns_server.add_a("mx2.remote.test", "127.0.0.1")

    hosts = resolve_mx_hosts("remote.test")

    assert names(hosts) == ["mx1.remote.test", "mx2.remote.test"]
    assert {host.port for host in hosts} == {2525}
    assert {host.address for host in hosts} == {"127.0.0.1"}


def test_equal_preference_order_varies(dns_server):
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_mx("remote.test", 10, "mx2.remote.test")
    dns_server.add_mx("remote.test", 20, "backup.remote.test")
    for name in ("mx1.remote.test", "mx2.remote.test", "backup.remote.test"):
        dns_server.add_a(name, "127.0.0.1")

    orders = {tuple(names(resolve_mx_hosts("remote.test"))) for _ in range(40)}

    # Each order has probability 1/2 per look-up, so 40 look-ups miss one with p = 2**-39.
    assert orders == {
        ("mx1.remote.test", "mx2.remote.test", "backup.remote.test"),
        ("mx2.remote.test", "mx1.remote.test", "backup.remote.test"),
    }


def test_implicit_mx_from_address_records(dns_server):
    dns_server.add_a("remote.test", "127.0.0.1")
    dns_server.add_aaaa("remote.test", "::1")

    hosts = resolve_mx_hosts("remote.test")

    assert names(hosts) == ["remote.test", "remote.test"]
    assert [host.address for host in hosts] == ["127.0.0.1", "::1"]


def test_ipv4_and_ipv6_addresses_both_listed(dns_server):
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_host("mx1.remote.test", "127.0.0.1", "::1")

    assert [host.address for host in resolve_mx_hosts("remote.test")] == ["127.0.0.1", "::1"]


def test_null_mx_bounces_with_5_1_10(dns_server):
    dns_server.add_null_mx("nomail.test")

    with pytest.raises(PermanentDeliveryError) as raised:
        resolve_mx_hosts("nomail.test")

    assert raised.value.reply.code == 556
    assert raised.value.reply.enhanced_code == "5.1.10"
    assert "null MX" in raised.value.reply.text


def test_nxdomain_bounces_with_5_1_2(dns_server):
    dns_server.set_nxdomain("missing.test")

    with pytest.raises(PermanentDeliveryError) as raised:
        resolve_mx_hosts("missing.test")

    assert raised.value.reply.code == 550
    assert raised.value.reply.enhanced_code == "5.1.2"


def test_no_records_at_all_bounces(dns_server):
    dns_server.add_mx("other.test", 10, "mx.other.test")

    with pytest.raises(PermanentDeliveryError) as raised:
        resolve_mx_hosts("unknown.test")

    assert raised.value.reply.enhanced_code == "5.1.2"


def test_servfail_is_temporary(dns_server):
    dns_server.set_servfail("broken.test")

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_mx_hosts("broken.test")

    assert raised.value.reply.code == 451
    assert raised.value.reply.enhanced_code == "4.4.3"


def test_dns_timeout_is_temporary(dns_server, settings):
    settings.MAILHUB_DNS_TIMEOUT = 0.3
    dns_server.set_timeout("slow.test")

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_mx_hosts("slow.test")

    assert raised.value.reply.enhanced_code == "4.4.3"
    assert "timed out" in raised.value.reply.text


def test_mx_host_servfail_falls_to_next(dns_server):
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_mx("remote.test", 20, "mx2.remote.test")
    dns_server.set_servfail("mx1.remote.test")
    dns_server.add_a("mx2.remote.test", "127.0.0.1")

    assert names(resolve_mx_hosts("remote.test")) == ["mx2.remote.test"]


def test_mx_hosts_without_addresses_defer(dns_server):
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.set_nxdomain("mx1.remote.test")

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_mx_hosts("remote.test")

    assert "mx1.remote.test has no A or AAAA records" in raised.value.reply.text


def test_idn_domain_looked_up_as_a_label(dns_server):
    dns_server.add_mx("xn--bcher-kva.test", 10, "mx.xn--bcher-kva.test")
    dns_server.add_a("mx.xn--bcher-kva.test", "127.0.0.1")

    hosts = resolve_mx_hosts("bücher.test")

    assert names(hosts) == ["mx.xn--bcher-kva.test"]
    assert ("xn--bcher-kva.test", "MX") in dns_server.queries


def test_private_addresses_skipped_unless_allowed(dns_server, settings):
    settings.MAILHUB_ALLOW_PRIVATE_MX = False
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_mx("remote.test", 20, "mx2.remote.test")
    dns_server.add_host("mx1.remote.test", "127.0.0.1", "10.1.2.3", "::1", "0.0.0.0")
    dns_server.add_host("mx2.remote.test", "8.8.8.8")

    hosts = resolve_mx_hosts("remote.test")

    assert [(host.name, host.address) for host in hosts] == [("mx2.remote.test", "8.8.8.8")]


def test_only_private_addresses_defer(dns_server, settings):
    settings.MAILHUB_ALLOW_PRIVATE_MX = False
    dns_server.add_mx("remote.test", 10, "mx1.remote.test")
    dns_server.add_host("mx1.remote.test", "127.0.0.1", "192.168.1.1")

    with pytest.raises(TemporaryDeliveryError) as raised:
        resolve_mx_hosts("remote.test")

    assert "127.0.0.1" in raised.value.reply.text
    assert "MAILHUB_ALLOW_PRIVATE_MX" in raised.value.reply.text


def test_hosts_limited_per_attempt(dns_server, settings):
    settings.MAILHUB_MAX_HOSTS_PER_ATTEMPT = 3
    for number in range(1, 6):
        dns_server.add_mx("remote.test", number * 10, f"mx{number}.remote.test")
        dns_server.add_host(f"mx{number}.remote.test", "127.0.0.1")

    assert names(resolve_mx_hosts("remote.test")) == ["mx1.remote.test", "mx2.remote.test", "mx3.remote.test"]


def test_dns_over_tcp_answers(dns_server):
    import dns.message
    import dns.query

    dns_server.add_mx("remote.test", 10, "mx1.remote.test")

    response = dns.query.tcp(dns.message.make_query("remote.test", "MX"), "127.0.0.1", port=dns_server.port, timeout=2)

    assert [record.exchange.to_text() for record in response.answer[0]] == ["mx1.remote.test."]


def test_address_literal_skips_dns(dns_server):
    hosts = resolve_mx_hosts("[127.0.0.1]")

    assert hosts == [RemoteHost("[127.0.0.1]", "127.0.0.1", 2525)]
    assert dns_server.queries == []


def test_ipv6_address_literal(dns_server):
    assert resolve_mx_hosts("[IPv6:::1]") == [RemoteHost("[ipv6:::1]", "::1", 2525)]


def test_private_address_literal_bounces(settings):
    settings.MAILHUB_ALLOW_PRIVATE_MX = False

    with pytest.raises(PermanentDeliveryError) as caught:
        resolve_mx_hosts("[10.0.0.1]")

    assert caught.value.reply.enhanced_code == "5.7.1"


def test_invalid_address_literal_bounces():
    with pytest.raises(PermanentDeliveryError) as caught:
        resolve_mx_hosts("[999.1.1.1]")

    assert caught.value.reply.enhanced_code == "5.1.2"
