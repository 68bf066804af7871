from .mailbox import Alias, Domain, Mailbox, MailboxMessage
from .spool import DeliveryAttempt, DestinationSlot, Message, Recipient, SweepRecord

__all__ = [
    "Alias",
    "DeliveryAttempt",
    "DestinationSlot",
    "Domain",
    "Mailbox",
    "MailboxMessage",
    "Message",
    "Recipient",
    "SweepRecord",
]
