"""Server TLS: the certificate and key from settings, reloaded when the files change.

Before every handshake the store compares the files' modification times, sizes and inodes
with the loaded ones and loads changed files into a new SSLContext, so a renewed
certificate (certbot) is served without a restart. With no certificate
configured, a self-signed one is generated once into TLS_DIR for development.
"""
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .. import conf
from ..exceptions import ConfigurationError

logger = logging.getLogger(__name__)

SELF_SIGNED_CERTFILE = "selfsigned-cert.pem"
SELF_SIGNED_KEYFILE = "selfsigned-key.pem"
SELF_SIGNED_VALID_DAYS = 365


class CertificateStore:
    """A server SSLContext that follows changes of its certificate and key files."""

    def __init__(self, certfile, keyfile):
        self.certfile = Path(certfile)
        self.keyfile = Path(keyfile)
        self.loaded_signature = None
        self.context = build_server_context()
        self.refresh()

    def file_signature(self):
        """Return what changes when either file is rewritten or replaced: mtime, size and inode."""
        signature = []
        for path in (self.certfile, self.keyfile):
            status = path.stat()
            signature.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(signature)

    def refresh(self):
        """Load the files again if they changed; keep the old chain if the new one is broken.

        A renewal writes the certificate and the key one after the other, so a handshake
        between the two writes may find a mismatched pair. The store then keeps serving the
        old pair and loads the files again at the next handshake.
        """
        try:
            signature = self.file_signature()
        except OSError as error:
            logger.error("TLS certificate %s or key %s not readable: %s", self.certfile, self.keyfile, error)
            return self.context
        if signature == self.loaded_signature:
            return self.context

        # A new context, because OpenSSL keeps a new certificate in the old context even
        # when its key does not match, and every handshake would then fail.
        context = build_server_context()
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as error:
            if self.loaded_signature is None:
                raise ConfigurationError(
                    f"cannot load TLS certificate {self.certfile} with key {self.keyfile}: {error}"
                ) from error
            logger.error("TLS certificate %s not reloaded, serving the previous one: %s", self.certfile, error)
            return self.context

        action = "loaded" if self.loaded_signature is None else "reloaded"
        self.context = context
        self.loaded_signature = signature
        logger.info("TLS certificate %s %s", self.certfile, action)
        return self.context


def build_server_context():
    """Return a server context that allows TLS 1.2 and newer and requests no client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def configured_store():
    """Return a CertificateStore for the configured files, or a self-signed pair; None without TLS_DIR."""
    certfile = conf.get("TLS_CERTFILE")
    keyfile = conf.get("TLS_KEYFILE")
    if certfile or keyfile:
        if not (certfile and keyfile):
            raise ConfigurationError("set both MAILHUB_TLS_CERTFILE and MAILHUB_TLS_KEYFILE, or neither")
        return CertificateStore(certfile, keyfile)

    tls_dir = conf.get("TLS_DIR")
    if not tls_dir:
        logger.warning("no TLS certificate configured and MAILHUB_TLS_DIR is empty: STARTTLS is off")
        return None
    certfile, keyfile = ensure_self_signed(Path(tls_dir), conf.get("HOSTNAME"))
    return CertificateStore(certfile, keyfile)


def ensure_self_signed(tls_dir, hostname):
    """Return the self-signed certificate and key paths in ``tls_dir``, generating them once."""
    certfile = tls_dir / SELF_SIGNED_CERTFILE
    keyfile = tls_dir / SELF_SIGNED_KEYFILE
    if certfile.exists() and keyfile.exists():
        return certfile, keyfile

    tls_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build_self_signed_certificate(key, hostname)
    write_private(keyfile, key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    logger.warning(
        "generated a self-signed TLS certificate for %s in %s; set MAILHUB_TLS_CERTFILE and "
        "MAILHUB_TLS_KEYFILE to a real certificate before facing the internet",
        hostname,
        tls_dir,
    )
    return certfile, keyfile


def build_self_signed_certificate(key, hostname):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(subject_names(hostname)), critical=False)
        .sign(key, hashes.SHA256())
    )


def subject_names(hostname):
    try:
        return [x509.IPAddress(ipaddress.ip_address(hostname))]
    except ValueError:
        return [x509.DNSName(hostname)]


def write_private(path, data):
    """Write a private key readable only by the owner."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def describe_tls(ssl_object):
    """Return (version, cipher name) of an established connection, or ("", "")."""
    if ssl_object is None:
        return "", ""
    cipher = ssl_object.cipher()
    return ssl_object.version() or "", cipher[0] if cipher else ""
