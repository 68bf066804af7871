"""DNS look-ups for outbound mail with dnspython: MX records and host addresses (RFC 5321 section 5.1).

Name servers, port and timeout come from conf (DNS_NAMESERVERS, DNS_PORT, DNS_TIMEOUT);
with no name servers configured the system's /etc/resolv.conf is used.
"""
import ipaddress
import logging
import random
import socket

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from .. import conf
from ..addresses import normalize_domain
from .errors import PermanentDeliveryError, TemporaryDeliveryError
from .types import RemoteHost, Reply

logger = logging.getLogger(__name__)

ADDRESS_TYPES = ("A", "AAAA")


def build_resolver():
    nameservers = conf.get("DNS_NAMESERVERS")
    if isinstance(nameservers, str):
        nameservers = [item.strip() for item in nameservers.split(",") if item.strip()]

    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.port = int(conf.get("DNS_PORT"))
    resolver.lifetime = float(conf.get("DNS_TIMEOUT"))
    resolver.timeout = float(conf.get("DNS_TIMEOUT"))
    return resolver


def temporary_failure(text):
    return TemporaryDeliveryError(Reply(451, "4.4.3", text))


def query(resolver, name, rdtype):
    """Return the answer's records, or [] when the name exists without records of that type.

    Raises dns.resolver.NXDOMAIN for a name that does not exist, and TemporaryDeliveryError
    for SERVFAIL, REFUSED and timeouts.
    """
    try:
        return list(resolver.resolve(name, rdtype, search=False))
    except dns.resolver.NoAnswer:
        return []
    except dns.resolver.NXDOMAIN:
        raise
    except dns.resolver.NoNameservers as error:
        raise temporary_failure(f"DNS {rdtype} look-up of {name} failed: no name server answered ({error})") from error
    except dns.exception.Timeout as error:
        raise temporary_failure(f"DNS {rdtype} look-up of {name} timed out") from error
    except dns.exception.DNSException as error:
        raise temporary_failure(f"DNS {rdtype} look-up of {name} failed: {error}") from error


def query_addresses(resolver, name):
    """Return the IPv4 then IPv6 addresses of ``name``; raises dns.resolver.NXDOMAIN like query()."""
    addresses = []
    for rdtype in ADDRESS_TYPES:
        addresses.extend(record.address for record in query(resolver, name, rdtype))
    return addresses


def resolve_addresses(resolver, name):
    """Return the IPv4 then IPv6 addresses of ``name``, or [] when the name does not exist."""
    try:
        return query_addresses(resolver, name)
    except dns.resolver.NXDOMAIN:
        return []


def is_usable_address(address):
    """Return whether MX delivery may connect to ``address`` (public, or private allowed by conf)."""
    if conf.get("ALLOW_PRIVATE_MX"):
        return True
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local
                or ip.is_multicast or ip.is_reserved)


def order_exchanges(records):
    """Return the MX host names, lowest preference first, shuffled among equal preferences."""
    by_preference = {}
    for record in records:
        by_preference.setdefault(record.preference, []).append(record.exchange)

    ordered = []
    for preference in sorted(by_preference):
        exchanges = by_preference[preference]
        random.shuffle(exchanges)
        ordered.extend(exchanges)
    return ordered


def is_null_mx(records):
    """Return whether the records are a null MX: a single MX whose exchange is the root "." (RFC 7505)."""
    return any(record.exchange == dns.name.root for record in records) and len(records) == 1


def resolve_mx_hosts(domain):
    """Return the RemoteHosts to try for ``domain``, at most conf MAX_HOSTS_PER_ATTEMPT.

    Raises PermanentDeliveryError for a domain that does not exist (5.1.2) or has a null
    MX (5.1.10), TemporaryDeliveryError for DNS failures and for a domain whose hosts
    have no usable address.
    """
    domain = normalize_domain(domain)
    port = int(conf.get("MX_PORT"))
    if domain.startswith("["):
        return [literal_host(domain, port)]

    resolver = build_resolver()
    try:
        records = query(resolver, domain, "MX")
    except dns.resolver.NXDOMAIN as error:
        raise PermanentDeliveryError(Reply(550, "5.1.2", f"domain {domain} does not exist (DNS NXDOMAIN)")) from error

    if is_null_mx(records):
        raise PermanentDeliveryError(Reply(556, "5.1.10", f"domain {domain} accepts no mail (null MX, RFC 7505)"))

    exchanges = [name for name in order_exchanges(records) if name != dns.name.root]
    if not records:
        # RFC 5321 section 5.1: with no MX records the domain itself is the implicit MX.
        return resolve_implicit_mx(resolver, domain, port)
    return collect_hosts(resolver, domain, [name.to_text(omit_final_dot=True) for name in exchanges], port)


def literal_host(domain, port):
    """Return the RemoteHost of an address literal such as ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``.

    RFC 5321 section 4.1.3: mail to an address literal goes to that address, with no DNS
    look-up. The private-address rule of MX delivery applies to it as well.
    """
    text = domain[1:-1]
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError as error:
        raise PermanentDeliveryError(Reply(550, "5.1.2", f"invalid address literal {domain}")) from error
    if not is_usable_address(address):
        raise PermanentDeliveryError(
            Reply(550, "5.7.1", f"address literal {domain} is a loopback, private or reserved address")
        )
    return RemoteHost(domain, address, port)


def resolve_implicit_mx(resolver, domain, port):
    try:
        addresses = query_addresses(resolver, domain)
    except dns.resolver.NXDOMAIN as error:
        raise PermanentDeliveryError(Reply(550, "5.1.2", f"domain {domain} does not exist (DNS NXDOMAIN)")) from error

    if not addresses:
        raise PermanentDeliveryError(Reply(550, "5.1.2", f"domain {domain} has no MX, A or AAAA records"))
    return collect_hosts(resolver, domain, [domain], port, known={domain: addresses})


def collect_hosts(resolver, domain, exchanges, port, known=None):
    """Return RemoteHosts for the MX host names in order, at most conf MAX_HOSTS_PER_ATTEMPT.

    A host without addresses, or whose look-up fails, is skipped; so is an address that
    is_usable_address rejects. Raises TemporaryDeliveryError when nothing is left.
    """
    limit = int(conf.get("MAX_HOSTS_PER_ATTEMPT"))
    hosts = []
    failures = []
    for exchange in exchanges:
        try:
            addresses = (known or {}).get(exchange) or resolve_addresses(resolver, exchange)
        except TemporaryDeliveryError as error:
            failures.append(error.reply.text)
            continue
        if not addresses:
            failures.append(f"MX host {exchange} has no A or AAAA records")

        for address in addresses:
            if not is_usable_address(address):
                logger.info("skipping MX host %s of %s: address %s is loopback, private or unspecified", exchange, domain, address)
                failures.append(f"MX host {exchange} has the unusable address {address} (see MAILHUB_ALLOW_PRIVATE_MX)")
                continue
            hosts.append(RemoteHost(exchange, address, port))

        if len(hosts) >= limit:
            break

    if not hosts:
        raise temporary_failure(f"no MX host of {domain} has a usable address: {'; '.join(failures)}")
    return hosts[:limit]


def resolve_host_addresses(name):
    """Return the addresses of a configured relay host name; every failure is temporary.

    A name that DNS does not know is looked up once more with the system's getaddrinfo,
    so /etc/hosts names such as "localhost" work as relay hosts.
    """
    try:
        addresses = resolve_addresses(build_resolver(), name)
    except TemporaryDeliveryError:
        addresses = []
    addresses = addresses or lookup_system_addresses(name)

    if not addresses:
        # A configured relay that does not resolve is an operator's error to fix, so mail waits.
        raise temporary_failure(f"relay host {name} has no address in DNS or the system's host database")
    return addresses


def lookup_system_addresses(name):
    try:
        results = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return []

    addresses = []
    for family, _, _, _, sockaddr in results:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses
