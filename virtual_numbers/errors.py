"""The broker's errors: one type per thing an operator or an API client must act on.

No message ever holds a citizen's number: they name tickets, departments, binding ids and virtual
numbers (the pool's own numbers, which are public), and counts.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error raised by the masking broker."""


class PoolExhausted(BrokerError):
    """No virtual number can carry the binding asked for (HTTP 409); the message says why."""


class UnknownNumber(BrokerError, LookupError):
    """The number is not a usable phone number, or not in the pool (or removed from it)."""


class NumberInUse(BrokerError):
    """A virtual number still carries live bindings and cannot be removed yet (drain it first)."""


class BindingNotFound(BrokerError, LookupError):
    """No binding has this id."""


class InvalidParty(BrokerError, ValueError):
    """The citizen's number or the department side of a binding cannot be used."""


class InvalidRequest(BrokerError, ValueError):
    """An argument other than a party is malformed (direction, expiry, reason, extension, ...)."""


class UnknownTicket(BrokerError, LookupError):
    """No ticket has this number."""


class ReceiptNotFound(BrokerError, LookupError):
    """No resolution was recorded under this call id."""
