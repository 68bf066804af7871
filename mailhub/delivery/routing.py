"""Routing: which next hop takes mail for a domain (local delivery, a configured route, or MX).

The order follows Postfix: a domain mailhub serves is delivered locally; else the route
table (like Postfix's transport map, exact domain first, then "*"), else the relay host
(relayhost), else the domain's MX records from DNS.
"""
import ipaddress
import logging

from .. import conf
from ..addresses import normalize_domain
from ..directory import is_local_domain
from ..exceptions import ConfigurationError
from . import resolver
from .tls import validate_policy
from .types import RemoteHost, Route

logger = logging.getLogger(__name__)

DEFAULT_PORT = 25
WILDCARD = "*"


def parse_routes(value):
    """Return the route table as {domain: (host, port)}; domains are lower-case A-labels.

    ``value`` is a dict of domain to next hop, or a string such as
    "remote.test=127.0.0.1:2626,*=relay.example.net:587". A next hop is "host",
    "host:port", "[host]:port" or "[IPv6]:port"; the port defaults to 25.
    Raises ConfigurationError naming the first invalid entry.
    """
    if not value:
        return {}
    if isinstance(value, str):
        value = parse_route_string(value)
    if not isinstance(value, dict):
        raise ConfigurationError(f"MAILHUB_ROUTES must be a dict or a string, not {type(value).__name__}")

    routes = {}
    for domain, next_hop in value.items():
        entry = f"{domain}={next_hop}"
        key = str(domain).strip()
        if not key:
            raise ConfigurationError(f"invalid route {entry!r} in MAILHUB_ROUTES: the domain is empty")
        key = key if key == WILDCARD else normalize_domain(key)
        routes[key] = parse_next_hop(next_hop, entry)
    return routes


def parse_route_string(value):
    routes = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        domain, separator, next_hop = item.partition("=")
        if not separator:
            raise ConfigurationError(f"invalid route {item!r} in MAILHUB_ROUTES: expected domain=host:port")
        routes[domain.strip()] = next_hop.strip()
    return routes


def parse_next_hop(next_hop, entry, setting="MAILHUB_ROUTES"):
    """Return (host, port) for "host", "host:port", "[host]:port", "[IPv6]:port" or a bare IPv6 address."""
    if isinstance(next_hop, (tuple, list)) and len(next_hop) == 2:
        host, port = str(next_hop[0]), str(next_hop[1])
    else:
        host, port = split_host_port(str(next_hop).strip(), entry, setting)

    if not host or any(char in host for char in " \t\r\n/@[]"):
        raise ConfigurationError(f"invalid route {entry!r} in {setting}: {host!r} is not a host name or address")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"invalid route {entry!r} in {setting}: port {port!r} is not a number from 1 to 65535")
    return host.lower(), int(port)


def split_host_port(text, entry, setting):
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"invalid route {entry!r} in {setting}: expected [host]:port")
        return host, rest[1:] if rest else str(DEFAULT_PORT)
    if text.count(":") > 1:
        return text, str(DEFAULT_PORT)
    host, _, port = text.partition(":")
    return host, port or str(DEFAULT_PORT)


def parse_tls_policies(value):
    """Return conf TLS_POLICIES as {domain or host: policy}, from a dict or "a.test=verify,b.test=none"."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs = [item.strip().partition("=") for item in value.split(",") if item.strip()]
        if any(not separator for _, separator, _ in pairs):
            raise ConfigurationError(f"invalid MAILHUB_TLS_POLICIES {value!r}: expected domain=policy,...")
        value = {key.strip(): policy.strip() for key, _, policy in pairs}
    return {
        normalize_domain(key): validate_policy(policy, f"MAILHUB_TLS_POLICIES[{key!r}]")
        for key, policy in value.items()
    }


def choose_tls_policy(domain, next_hop_host, default_setting):
    """Return the TLS policy: TLS_POLICIES for the domain, then for the next-hop host, else the default setting."""
    policies = parse_tls_policies(conf.get("TLS_POLICIES"))
    for key in (domain, next_hop_host):
        if key and normalize_domain(key) in policies:
            return policies[normalize_domain(key)]
    return validate_policy(conf.get(default_setting), f"MAILHUB_{default_setting}")


def format_next_hop(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def next_hop_hosts(host, port):
    """Return RemoteHosts for a configured next hop; a name is looked up as A and AAAA."""
    if is_ip_address(host):
        return (RemoteHost(host, host, port),)
    return tuple(RemoteHost(host, address, port) for address in resolver.resolve_host_addresses(host))


def find_configured_next_hop(domain):
    """Return (host, port, from_relay_host) for the domain's route or the relay host, or None."""
    routes = parse_routes(conf.get("ROUTES"))
    for key in (domain, WILDCARD):
        if key in routes:
            host, port = routes[key]
            return host, port, False

    relay_host = conf.get("RELAY_HOST")
    if relay_host:
        host, port = parse_next_hop(relay_host, relay_host, "MAILHUB_RELAY_HOST")
        return host, port, True
    return None


def resolve_route(domain):
    """Return the Route for mail to ``domain``.

    Raises TemporaryDeliveryError or PermanentDeliveryError when DNS fails (see
    resolver.resolve_mx_hosts), and ConfigurationError for an invalid route setting.
    """
    domain = normalize_domain(domain)
    if is_local_domain(domain):
        return Route(kind="local", destination="local", domain=domain)

    configured = find_configured_next_hop(domain)
    if configured is not None:
        return build_relay_route(domain, *configured)

    hosts = tuple(resolver.resolve_mx_hosts(domain))
    return Route(
        kind="mx",
        destination=f"mx:{domain}",
        domain=domain,
        hosts=hosts,
        tls_policy=choose_tls_policy(domain, "", "MX_TLS_POLICY"),
    )


def build_relay_route(domain, host, port, from_relay_host):
    """Return the Route to a configured next hop; only the relay host gets the relay credentials."""
    default_setting = "RELAY_TLS_POLICY" if from_relay_host else "ROUTE_TLS_POLICY"
    return Route(
        kind="relay",
        destination=f"relay:{format_next_hop(host, port)}",
        domain=domain,
        hosts=next_hop_hosts(host, port),
        tls_policy=choose_tls_policy(domain, host, default_setting),
        username=conf.get("RELAY_USERNAME") if from_relay_host else "",
        password=conf.get("RELAY_PASSWORD") if from_relay_host else "",
    )
