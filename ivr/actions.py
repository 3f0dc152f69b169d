"""The words the IVR engine and its drivers speak to each other.

Actions go from the engine to a driver (FastAGI, Twilio, the simulator); inputs come back.
A step of the engine is zero or more ``Play``/``SetLanguage`` followed by exactly one of
``Collect`` or ``LookupTicket`` (the engine then waits for an input) or ``Route``/``Hangup``
(the call leaves the IVR).
"""

from __future__ import annotations

from dataclasses import dataclass

from base.vocabulary import Urgency
from ivr.errors import InputError

URGENCIES = tuple(u.value for u in Urgency)


# --- actions: engine -> driver ---------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """Play a prompt id to the end (no keys collected)."""

    prompt: str


@dataclass(frozen=True)
class Collect:
    """Play a prompt while collecting up to ``max_digits`` DTMF keys; '#' ends the input early.

    The driver answers with ``Digits`` (``Digits("")`` when the caller pressed nothing), or with
    ``PromptUnavailable`` when it could not play the prompt.
    """

    prompt: str
    max_digits: int
    timeout_ms: int


@dataclass(frozen=True)
class SetLanguage:
    """From now on play prompts in this language ("zh-CN" or "en")."""

    language: str


@dataclass(frozen=True)
class LookupTicket:
    """Look up a ticket's status; the driver answers with ``TicketStatus``."""

    number: str


@dataclass(frozen=True)
class Route:
    """Final: hand the caller to an agent queue for this category."""

    category: str
    urgency: str


@dataclass(frozen=True)
class Hangup:
    """Final: end the call (reason "caller" means the caller hung up first)."""

    reason: str


# --- inputs: driver -> engine ----------------------------------------------------------------


@dataclass(frozen=True)
class Digits:
    """Keys the caller pressed, without the ending '#'; "" means nothing before the timeout."""

    digits: str

    def __post_init__(self) -> None:
        if not isinstance(self.digits, str):
            raise InputError(f"Digits.digits must be a str, got {type(self.digits).__name__}")


@dataclass(frozen=True)
class TicketStatus:
    """The answer to ``LookupTicket``: the ticket's status, or None when there is no such ticket."""

    number: str
    status: str | None

    def __post_init__(self) -> None:
        if not isinstance(self.number, str):
            raise InputError(f"TicketStatus.number must be a str, got {type(self.number).__name__}")
        if self.status is not None and not isinstance(self.status, str):
            raise InputError(
                f"TicketStatus.status must be a str or None, got {type(self.status).__name__}"
            )


@dataclass(frozen=True)
class CallerHungUp:
    """The caller hung up while the IVR was waiting or playing."""


@dataclass(frozen=True)
class PromptUnavailable:
    """The driver could not play the prompt of a ``Collect`` (e.g. its sound file is missing).

    The caller cannot hear the menu, so the engine sends them to an agent in the current language.
    """

    prompt: str

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise InputError(f"PromptUnavailable.prompt must be a str, got {type(self.prompt).__name__}")


Action = Play | Collect | SetLanguage | LookupTicket | Route | Hangup
Input = Digits | TicketStatus | CallerHungUp | PromptUnavailable

#: Actions after which the engine waits for an input.
WAITING_ACTIONS = (Collect, LookupTicket)
#: Actions that end the IVR part of the call.
FINAL_ACTIONS = (Route, Hangup)
