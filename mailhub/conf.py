"""Every mailhub setting with its default, read from Django's settings at call time.

Code reads a setting as ``conf.get("MAX_RECIPIENTS")`` or ``conf.settings.MAX_RECIPIENTS``;
the project sets it as ``MAILHUB_MAX_RECIPIENTS``. Nothing is cached, so
``override_settings`` in tests and a changed settings module both take effect at once.
"""
from django.conf import settings as django_settings

DEFAULTS = {
    # The name the listeners announce in their greeting and EHLO reply, and that the
    # client gives in EHLO and that DSNs name as Reporting-MTA.
    "HOSTNAME": "localhost",
    # Listener addresses as "host:port"; an empty value turns the listener off.
    "MX_LISTEN": "0.0.0.0:25",
    "SUBMISSION_LISTEN": "0.0.0.0:587",
    "SUBMISSIONS_LISTEN": "",
    # Routing: a transport map of domain to "host:port" ("*" matches every domain), as
    # a dict or as "a.test=host:port,*=relay:587". A route or the relay host wins over DNS.
    "ROUTES": {},
    "RELAY_HOST": "",
    "RELAY_USERNAME": "",
    "RELAY_PASSWORD": "",
    # TLS policy for a relay host and for MX delivery: none, may, encrypt or verify.
    "RELAY_TLS_POLICY": "verify",
    "MX_TLS_POLICY": "may",
    "TLS_CA_FILE": "",
    # DNS: name servers as IP addresses (empty uses the system resolver) and their port.
    "DNS_NAMESERVERS": [],
    "DNS_PORT": 53,
    "DNS_TIMEOUT": 10.0,
    # The port MX delivery connects to; tests point it at a local test server.
    "MX_PORT": 25,
    # Whether MX delivery may connect to loopback, private or unspecified addresses.
    "ALLOW_PRIVATE_MX": False,
    "MAX_HOSTS_PER_ATTEMPT": 5,
    # Retry schedule in seconds: first retry, growth factor, cap, and the queue lifetime
    # after which a recipient bounces as expired (Postfix: 300 s, 4000 s, 5 days).
    "RETRY_FIRST": 300,
    "RETRY_FACTOR": 2.0,
    "RETRY_MAX": 4000,
    "RETRY_JITTER": 0.1,
    "QUEUE_LIFETIME": 5 * 24 * 3600,
    "DELAY_WARNING_AFTER": 0,
    # Claiming: how long a worker may hold recipients before the sweep returns them.
    "LEASE_SECONDS": 600,
    "CLAIM_BATCH": 100,
    "DESTINATION_CONCURRENCY": 20,
    "RECIPIENTS_PER_TRANSACTION": 100,
    "MAX_RECEIVED_HEADERS": 50,
    # SMTP client timeouts in seconds, from RFC 5321 section 4.5.3.2.
    "CONNECT_TIMEOUT": 30,
    "COMMAND_TIMEOUT": 300,
    "DATA_BLOCK_TIMEOUT": 180,
    "DATA_END_TIMEOUT": 600,
    # Listener limits.
    "MAX_MESSAGE_SIZE": 25 * 1024 * 1024,
    "MAX_RECIPIENTS": 100,
    "MAX_CONNECTIONS": 1000,
    "MAX_CONNECTIONS_PER_CLIENT": 50,
    "MAX_ERRORS_PER_SESSION": 10,
    "SERVER_COMMAND_TIMEOUT": 300,
    "SERVER_DATA_TIMEOUT": 180,
    "BARE_NEWLINE_POLICY": "reject",
    "TRUSTED_NETWORKS": [],
    "PROXY_PROTOCOL": False,
    "TLS_CERTFILE": "",
    "TLS_KEYFILE": "",
    "TLS_DIR": "",
    "ALLOW_PLAIN_AUTH_FROM_LOOPBACK": False,
    "RECEIVED_SHOWS_USER": False,
    # DSNs: how much of the original message a bounce returns.
    "BOUNCE_MAX_RETURNED_SIZE": 100 * 1024,
    # Purge: days that delivered and bounced messages stay in the spool.
    "PURGE_AFTER_DAYS": 7,
    "SWEEP_INTERVAL": 30,
}


def get(name):
    """Return the setting ``MAILHUB_<name>`` or its default.

    Raises AttributeError for a name that is not a mailhub setting, so a typo fails
    loudly instead of reading as None.
    """
    if name not in DEFAULTS:
        raise AttributeError(f"{name!r} is not a mailhub setting; see mailhub/conf.py")
    return getattr(django_settings, f"MAILHUB_{name}", DEFAULTS[name])


class _Settings:
    """Attribute access to mailhub settings, read at call time."""

    def __getattr__(self, name):
        return get(name)


settings = _Settings()
