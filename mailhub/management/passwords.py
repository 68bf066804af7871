"""Passwords for mailbox users: taken from --password or prompted for, never echoed or logged."""
import getpass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


def add_password_argument(parser):
    parser.add_argument(
        "--password",
        help="The user's new password. It shows in the process list and shell history, so "
        "leave it out to be prompted for it without echo.",
    )


def read_new_password(password, stdin, user):
    """Return a password that passes AUTH_PASSWORD_VALIDATORS for ``user``.

    ``password`` comes from --password; when it is None the password is read twice from
    the terminal without echo. Raises CommandError if it is missing, mistyped or weak.
    """
    if password is None:
        password = prompt_password(stdin)
    try:
        validate_password(password, user)
    except ValidationError as error:
        raise CommandError(f"the password is not accepted: {' '.join(error.messages)}") from None
    return password


def prompt_password(stdin):
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise CommandError("no password given; pass --password, or run the command in a terminal to be prompted")

    password = getpass.getpass("Password: ")
    if not password:
        raise CommandError("the password is empty; run the command again and type a password")
    if getpass.getpass("Password (again): ") != password:
        raise CommandError("the passwords do not match; run the command again")
    return password
