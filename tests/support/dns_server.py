"""Fixture ``dns_server``: a real DNS server on 127.0.0.1 (UDP and TCP, one ephemeral port).

Tests add records per test and point mailhub's resolver at it::

    def test_mx(dns_server):
        dns_server.add_mx("remote.test", 10, "mx1.remote.test")
        dns_server.add_a("mx1.remote.test", "127.0.0.1")

A name with no records gets NXDOMAIN, and a name with records of other types gets
NOERROR with an empty answer section. ``set_servfail`` and ``set_timeout`` make a name fail.
The fixture sets MAILHUB_DNS_NAMESERVERS and MAILHUB_DNS_PORT through pytest-django's
``settings``; processes that other fixtures start read ``dns_server.environ()``.
"""
import socketserver
import threading

import pytest
from dnslib import AAAA, MX, QTYPE, RCODE, RR, A, DNSLabel, DNSRecord

TTL = 60
NXDOMAIN = "nxdomain"
SERVFAIL = "servfail"
TIMEOUT = "timeout"


def normalize_name(name):
    return str(name).rstrip(".").lower()


class Zone:
    """The records and failure modes a DNS server answers with; safe to change from tests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = {}
        self.failures = {}
        self.queries = []

    def add(self, name, rdtype, rdata):
        with self.lock:
            self.records.setdefault(normalize_name(name), []).append((rdtype, rdata))

    def fail(self, name, mode):
        with self.lock:
            self.failures[normalize_name(name)] = mode

    def build_reply(self, request):
        """Return the reply DNSRecord for ``request``, or None to drop it (a timeout)."""
        name = normalize_name(request.q.qname)
        rdtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((name, rdtype))
            mode = self.failures.get(name)
            records = list(self.records.get(name, []))

        if mode == TIMEOUT:
            return None
        reply = request.reply()
        if mode == SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if mode == NXDOMAIN or not records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply

        for record_type, rdata in records:
            if record_type == rdtype:
                reply.add_answer(RR(request.q.qname, getattr(QTYPE, record_type), rdata=rdata, ttl=TTL))
        return reply


def build_response(zone, data):
    try:
        request = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - a malformed query gets no answer, as from a real server
        return None
    reply = zone.build_reply(request)
    return None if reply is None else reply.pack()


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        packet = build_response(self.server.zone, data)
        if packet is not None:
            sock.sendto(packet, self.client_address)


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        length_bytes = self.request.recv(2)
        if len(length_bytes) < 2:
            return
        length = int.from_bytes(length_bytes, "big")
        data = b""
        while len(data) < length:
            chunk = self.request.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        packet = build_response(self.server.zone, data)
        if packet is not None:
            self.request.sendall(len(packet).to_bytes(2, "big") + packet)


class ThreadingUDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DNSServer:
    """A DNS server on 127.0.0.1 answering from a Zone over UDP and TCP on the same port."""

    address = "127.0.0.1"

    def __init__(self):
        self.zone = Zone()
        self.servers = []
        self.port = None

    def start(self):
        for _ in range(20):
            udp = ThreadingUDPServer((self.address, 0), UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = ThreadingTCPServer((self.address, port), TCPHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no port on 127.0.0.1 was free for both UDP and TCP")

        self.port = port
        for server in (udp, tcp):
            server.zone = self.zone
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self.servers.append(server)
        return self

    def stop(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers = []

    def environ(self):
        """Return the environment that makes another process's mailhub use this server."""
        return {"MAILHUB_DNS_NAMESERVERS": self.address, "MAILHUB_DNS_PORT": str(self.port)}

    # Records.

    def add_mx(self, domain, preference, exchange):
        self.zone.add(domain, "MX", MX(DNSLabel(exchange), preference))

    def add_null_mx(self, domain):
        """Add the RFC 7505 null MX, "0 .", which declares that the domain accepts no mail."""
        self.zone.add(domain, "MX", MX(DNSLabel("."), 0))

    def add_a(self, name, address):
        self.zone.add(name, "A", A(address))

    def add_aaaa(self, name, address):
        self.zone.add(name, "AAAA", AAAA(address))

    def add_host(self, name, *addresses):
        for address in addresses:
            if ":" in address:
                self.add_aaaa(name, address)
            else:
                self.add_a(name, address)

    def set_nxdomain(self, name):
        self.zone.fail(name, NXDOMAIN)

    def set_servfail(self, name):
        self.zone.fail(name, SERVFAIL)

    def set_timeout(self, name):
        """Drop every query for ``name`` unanswered, so resolvers time out."""
        self.zone.fail(name, TIMEOUT)

    @property
    def queries(self):
        with self.zone.lock:
            return list(self.zone.queries)


@pytest.fixture
def dns_server(settings):
    """A running DNSServer that mailhub's resolver (in this process) is pointed at."""
    server = DNSServer().start()
    settings.MAILHUB_DNS_NAMESERVERS = [server.address]
    settings.MAILHUB_DNS_PORT = server.port
    settings.MAILHUB_DNS_TIMEOUT = 5.0
    try:
        yield server
    finally:
        server.stop()
