"""Every mailhub setting with its default, read from Django's settings at call time.

Code reads a setting as ``conf.get("MAX_RECIPIENTS")`` or ``conf.settings.MAX_RECIPIENTS``;
the project sets it as ``MAILHUB_MAX_RECIPIENTS``. Nothing is cached, so
``override_settings`` in tests and a changed settings module both take effect at once.
"""
from django.conf import settings as django_settings
from django.utils.functional import empty

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
    # TLS policy for a ROUTES entry (a transport-map next hop, not the relay host).
    "ROUTE_TLS_POLICY": "may",
    # TLS policy per recipient domain or next-hop host name, which wins over the three
    # above: a dict or "bank.test=verify,old.test=none".
    "TLS_POLICIES": {},
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
    # Seconds a worker waits for a free session slot of a destination before it puts the
    # recipients back, due again after the same wait.
    "DESTINATION_SLOT_WAIT": 5,
    "RECIPIENTS_PER_TRANSACTION": 100,
    # Outcomes of sent recipients are stored together once this many wait or the oldest has
    # waited this many seconds. A worker killed in between leaves that much mail sent but
    # unrecorded, and it is sent again when its lease expires. 1 stores after every reply.
    "DELIVERY_RECORD_RECIPIENTS": 10,
    "DELIVERY_RECORD_SECONDS": 0.1,
    # Seconds during which a delivery task goes on claiming other due mail after its own,
    # so a pool process stays busy while a backlog lasts instead of waiting for a hint.
    "DELIVERY_DRAIN_SECONDS": 30,
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
    # Seconds without any received bytes before DATA times out (RFC 5321 4.5.3.2: per block).
    "SERVER_DATA_TIMEOUT": 180,
    # Bytes per second a DATA phase must average, so a client trickling bytes is still cut
    # off after SERVER_DATA_TIMEOUT plus size / rate seconds (Postfix's smtpd_min_data_rate).
    "SERVER_MIN_DATA_RATE": 500,
    # Longest DATA line in octets without CRLF. RFC 5321 says 998, but real mail exceeds it
    # (DKIM header lists, generated HTML) and Postfix stores such lines, so longer lines are
    # accepted up to this bound and a line past it rejects the message with 554 5.6.0.
    "MAX_LINE_LENGTH": 64 * 1024,
    # The listeners' event loop: "auto" takes uvloop where it is installed, else asyncio's
    # own; "uvloop" or "asyncio" requests that loop.
    "SERVER_EVENT_LOOP": "auto",
    # Threads that run the listeners' database calls, so the event loop does not block on the
    # DB: recipient look-ups, and the group commits on SQLite (PostgreSQL's go from the loop).
    "SERVER_DB_THREADS": 8,
    # Threads that check AUTH passwords. Each check hashes for a long time, and the hashing
    # runs on the CPU without the GIL, so more threads than cores gain nothing.
    "SERVER_AUTH_THREADS": 2,
    # Group commit: the listeners store the messages that finish DATA while a commit runs
    # together in the next transaction, at most this many messages and bytes per group
    # (a larger message is stored alone).
    "SERVER_GROUP_COMMIT_MAX_MESSAGES": 200,
    "SERVER_GROUP_COMMIT_MAX_BYTES": 16 * 1024 * 1024,
    # Groups that may commit at the same time. One keeps SQLite's single writer from
    # waiting on its lock. More let PostgreSQL flush several groups at once, each on a
    # connection of its own, which was no faster on a 2-core machine with bench/inbound.py.
    "SERVER_GROUP_COMMIT_CONCURRENCY": 1,
    # Seconds a listener remembers that a local recipient address is deliverable, so
    # RCPT needs no query. Unknown addresses are never remembered, so a new mailbox takes
    # mail at once. A removed or deactivated one is accepted for up to this long, and its
    # mail then bounces at delivery. 0 turns the cache off.
    "SERVER_RECIPIENT_CACHE_SECONDS": 10,
    # Failed AUTH. Per client address, at most MAX_FAILURES password checks may be in flight
    # or have failed within WINDOW seconds; past that AUTH gets 421 4.7.0, and each failure
    # reply first waits DELAY seconds, doubled per recent failure up to MAX_DELAY. Per user
    # name, recent failures delay every check of that name the same way (also up to
    # MAX_DELAY). Past MAX_FAILURES of a name, a wrong password for it also ends its session
    # with 421, but the name is never blocked: its correct password is still accepted, so
    # failures from other addresses cannot lock a user out. 0 for MAX_FAILURES turns both off.
    "AUTH_MAX_FAILURES": 5,
    "AUTH_FAILURE_WINDOW": 900,
    "AUTH_FAILURE_DELAY": 1.0,
    "AUTH_FAILURE_MAX_DELAY": 16.0,
    # "reject" replies 550 5.5.2 to a message with a bare CR or LF, as Postfix's
    # smtpd_forbid_bare_newline = reject does. "normalize" stores such line ends as CRLF.
    "BARE_NEWLINE_POLICY": "reject",
    # Networks (CIDR) whose clients may relay without AUTH; loopback is not trusted by default.
    "TRUSTED_NETWORKS": [],
    # Expect a PROXY protocol v1 or v2 header before the greeting (behind a load balancer).
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
    # The Celery app module that `runmailserver --worker` starts; empty derives it from
    # DJANGO_SETTINGS_MODULE ("project.settings" gives "project").
    "CELERY_APP": "",
    # Seconds the admin queue summary waits for Celery workers to reply; 0 skips the check.
    "ADMIN_WORKER_PING_TIMEOUT": 1.0,
}

SETTING_NAMES = {name: f"MAILHUB_{name}" for name in DEFAULTS}


def get(name):
    """Return the setting ``MAILHUB_<name>`` or its default.

    Raises AttributeError for a name that is not a mailhub setting, so a typo fails
    loudly instead of reading as None.
    """
    try:
        setting_name = SETTING_NAMES[name]
    except KeyError:
        raise AttributeError(f"{name!r} is not a mailhub setting; see mailhub/conf.py") from None
    # The listeners read settings several times per SMTP command. Asking the object behind
    # Django's lazy settings skips two Python-level lookups, and it is still read at call
    # time: override_settings() swaps that object.
    holder = django_settings._wrapped
    if holder is empty:
        holder = django_settings
    return getattr(holder, setting_name, DEFAULTS[name])


class _Settings:
    """Attribute access to mailhub settings, read at call time."""

    def __getattr__(self, name):
        return get(name)


settings = _Settings()
