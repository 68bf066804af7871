"""Django admin screens for the queue and the mailboxes; importing the modules registers them."""
from . import mailboxes, queue

__all__ = ["mailboxes", "queue"]
