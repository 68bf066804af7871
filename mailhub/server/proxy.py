"""The PROXY protocol (v1 text and v2 binary) from a load balancer in front of the listeners.

It is off by default, because a client that may send a PROXY header can claim any
address. aiosmtpd parses both versions; this module turns the result into the address
that every policy, limit and log line uses.
"""
import logging

from aiosmtpd.proxy_protocol import get_proxy

logger = logging.getLogger(__name__)


async def read_proxy_header(reader, peer_address):
    """Return the client address the PROXY header names, or None when it is invalid.

    A "PROXY UNKNOWN" header (a health check) keeps the load balancer's own address.
    """
    proxy_data = await get_proxy(reader)
    if not proxy_data.valid:
        logger.warning("client=%s invalid PROXY header: %s", peer_address, proxy_data.error)
        return None
    if proxy_data.src_addr is None:
        return peer_address
    return str(proxy_data.src_addr)
