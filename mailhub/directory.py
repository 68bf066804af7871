"""Look-ups in the local mail directory: served domains, mailboxes and aliases."""
from .addresses import canonical_address, normalize_domain, split_address
from .exceptions import MailhubError
from .models import Alias, Domain, Mailbox

# Postfix's default for virtual_alias_recursion_limit is 1000; ten levels are more than any
# real alias chain needs and end a loop quickly.
MAX_ALIAS_DEPTH = 10


class AliasLoopError(MailhubError, RecursionError):
    """An alias chain is longer than MAX_ALIAS_DEPTH, which in practice means a loop."""


def is_local_domain(domain):
    return Domain.objects.filter(name=normalize_domain(domain), active=True).exists()


def lookup_key(address):
    """Return the address as mailboxes and aliases are stored: lower case, domain as an A-label."""
    return canonical_address(address).lower()


def find_mailbox(address):
    """Return the active Mailbox for the address, or None."""
    return Mailbox.objects.filter(address=lookup_key(address), active=True, domain__active=True).first()


def find_alias(address):
    """Return the alias for the address: an exact match first, then the domain's catch-all."""
    key = lookup_key(address)
    exact = Alias.objects.filter(source=key, active=True, domain__active=True).first()
    if exact is not None:
        return exact
    if find_mailbox(address) is not None:
        return None
    catch_all = "@" + split_address(key)[1]
    return Alias.objects.filter(source=catch_all, active=True, domain__active=True).first()


def is_deliverable_locally(address):
    """Return whether a local address has a mailbox or an alias that takes its mail."""
    return find_mailbox(address) is not None or find_alias(address) is not None


def expand(address, depth=0):
    """Return the final destinations of an address after alias expansion.

    Each result is a local address with a mailbox, a remote address, or a local address
    that has neither (the caller bounces it as an unknown user). Duplicates are removed
    and order is kept. Raises AliasLoopError past MAX_ALIAS_DEPTH levels.
    """
    if depth > MAX_ALIAS_DEPTH:
        raise AliasLoopError(f"alias expansion of {address} is deeper than {MAX_ALIAS_DEPTH} levels")
    domain = split_address(address)[1]
    if not is_local_domain(domain):
        return [address]

    alias = find_alias(address)
    if alias is None:
        return [lookup_key(address)]

    destinations = []
    for destination in alias.destination_list():
        for final in expand(destination, depth + 1):
            if final not in destinations:
                destinations.append(final)
    return destinations


def has_postmaster(domain):
    """Return whether a mailbox, an alias or the catch-all of ``domain`` takes mail for its postmaster.

    RFC 5321 section 4.5.1 requires every domain that accepts mail to accept it for
    "postmaster". Active flags are ignored, so an inactive domain can be prepared.
    """
    address = f"postmaster@{domain.name}"
    if Mailbox.objects.filter(address=address).exists():
        return True
    return Alias.objects.filter(source__in=[address, f"@{domain.name}"]).exists()


def find_alias_loop(candidate):
    """Return the address chain that would loop if ``candidate`` (an unsaved or edited Alias) were saved, else None.

    The walk follows the same look-ups as expand(): an exact alias first, then the
    domain's catch-all when no mailbox matches, with ``candidate`` in place of its stored
    version. A chain deeper than MAX_ALIAS_DEPTH is returned too, because expand() raises
    AliasLoopError for it at delivery. Addresses of inactive domains are treated as final,
    except in the candidate's own domain.
    """
    finished = set()

    def walk(address, path):
        key = lookup_key(address) if not address.startswith("@") else address
        if key in path or len(path) > MAX_ALIAS_DEPTH:
            return [*path, key]
        if key in finished:
            return None

        alias = alias_for_check(key, candidate)
        destinations = alias.destination_list() if alias is not None else []
        for destination in destinations:
            chain = walk(destination, [*path, key])
            if chain is not None:
                return chain

        finished.add(key)
        return None

    return walk(candidate.source, [])


def alias_for_check(key, candidate):
    """Return the alias that expand() would use for ``key`` once ``candidate`` is saved, or None."""
    if key == candidate.source:
        return candidate
    local_part, domain = split_address(key)
    if domain != candidate.domain.name and not is_local_domain(domain):
        return None

    others = Alias.objects.filter(active=True, domain__active=True).exclude(pk=candidate.pk)
    exact = others.filter(source=key).first()
    if exact is not None:
        return exact
    if Mailbox.objects.filter(address=key, active=True).exists():
        return None
    if candidate.is_catch_all and domain == candidate.domain.name:
        return candidate
    return others.filter(source="@" + domain).first()


def addresses_owned_by(user):
    """Return the lower-case addresses a user may send as: own mailboxes and aliases to them."""
    owned = set(Mailbox.objects.filter(user=user, active=True).values_list("address", flat=True))
    for alias in Alias.objects.filter(active=True, local_part__gt=""):
        if owned.intersection(lookup_key(item) for item in alias.destination_list()):
            owned.add(alias.source)
    return owned
