"""Delivery failures that carry the SMTP reply (remote or locally made) that explains them."""
from ..exceptions import MailhubError


class DeliveryError(MailhubError, RuntimeError):
    """A recipient could not be delivered now; ``reply`` says why and which host said so."""

    def __init__(self, reply):
        super().__init__(str(reply))
        self.reply = reply


class TemporaryDeliveryError(DeliveryError):
    """A failure worth retrying later (4xx, DNS SERVFAIL or timeout, every host unreachable)."""


class PermanentDeliveryError(DeliveryError):
    """A failure that retrying cannot fix (5xx, NXDOMAIN, null MX); the recipient bounces."""
