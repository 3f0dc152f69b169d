"""TicketSnapshot: the whole state of a ticket and of the call that opened it, at one revision.

The call handler builds one when a call starts and saves it, then saves a newer revision when the call
leaves the IVR. A snapshot is plain data and travels as JSON (``to_dict`` / ``from_dict``), in an RQ job
or a spool line, so a write that could not happen during the call happens later, unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orders.caller import KINDS, RAW_MAX_LENGTH
from orders.errors import InvalidSnapshot
from orders.lifecycle import CallOutcome, Channel, Language, TicketStatus, Urgency

NUMBER_MAX_LENGTH = 20
_NUMBER = re.compile(r"[0-9]{1,%d}" % NUMBER_MAX_LENGTH)
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")

#: Longest text each field may hold (the column sizes of orders.models).
TEXT_LIMITS = {
    "caller_raw": RAW_MAX_LENGTH,
    "caller_e164": 16,
    "category": 50,
    "department": 100,
    "ivr_path": 2000,
    "uniqueid": 64,
    "linkedid": 64,
    "call_channel": 128,
    "dialed_number": 64,
}
#: The Unicode control characters (category Cc), NUL among them: never stored, refused in API queries.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_VALUES = {enum: frozenset(member.value for member in enum)
           for enum in (TicketStatus, Urgency, Channel, Language, CallOutcome)}
_DATETIMES = ("created_at", "updated_at", "started_at", "answered_at", "ended_at")
_CALL_FIELDS = ("linkedid", "call_channel", "dialed_number", "started_at", "answered_at", "ended_at", "outcome")


def fit_text(name: str, value: str | None) -> str | None:
    """Text from outside (Asterisk, a carrier) made storable in the field ``name``: control characters
    (NUL among them) removed and cut to the field's size in TEXT_LIMITS. None stays None."""
    if value is None:
        return None
    return CONTROL_CHARACTERS.sub("", str(value))[:TEXT_LIMITS[name]]


@dataclass(frozen=True)
class TicketSnapshot:
    """A ticket (and its opening call) as the call handler last saw it.

    ``revision`` starts at 1 and grows with each save of the same ticket; the store keeps the highest.
    ``created_at`` identifies the ticket's origin together with its number: it must stay the same across
    revisions (use :meth:`next`). The call fields are all ``None`` when no call opened the ticket.
    Datetimes must carry a time zone; they are kept in UTC.
    """

    number: str
    revision: int
    caller_raw: str
    caller_e164: str | None
    caller_kind: str
    created_at: datetime
    updated_at: datetime | None = None  # None: same as created_at
    channel: str = Channel.phone.value
    language: str = Language.zh_CN.value
    ivr_path: str = ""
    category: str | None = None
    urgency: str = Urgency.normal.value
    confidential: bool = False
    status: str = TicketStatus.in_ivr.value
    department: str | None = None
    uniqueid: str | None = None  # Asterisk's agi_uniqueid
    linkedid: str | None = None
    call_channel: str | None = None  # the Asterisk channel name, e.g. PJSIP/trunk-00000001
    dialed_number: str | None = None
    started_at: datetime | None = None  # None with a uniqueid: same as created_at
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.number, str) or not _NUMBER.fullmatch(self.number):
            raise InvalidSnapshot(f"ticket number must be 1 to {NUMBER_MAX_LENGTH} digits, got {self.number!r}")
        if isinstance(self.revision, bool) or not isinstance(self.revision, int) or self.revision < 1:
            raise InvalidSnapshot(f"revision of ticket {self.number} must be a whole number >= 1")
        if not isinstance(self.confidential, bool):
            raise InvalidSnapshot(f"confidential of ticket {self.number} must be true or false")
        for name, enum in (
            ("status", TicketStatus),
            ("urgency", Urgency),
            ("channel", Channel),
            ("language", Language),
        ):
            self._set(name, self._enum_value(name, enum, getattr(self, name)))
        if self.outcome is not None:
            self._set("outcome", self._enum_value("outcome", CallOutcome, self.outcome))
        if self.caller_kind not in KINDS:
            raise InvalidSnapshot(f"caller_kind of ticket {self.number} must be one of {', '.join(KINDS)}")
        for name, limit in TEXT_LIMITS.items():
            self._check_text(name, limit, nullable=name not in ("caller_raw", "ivr_path"))
        if self.caller_e164 is not None and not _E164.fullmatch(self.caller_e164):
            raise InvalidSnapshot(f"caller_e164 of ticket {self.number} is not an E.164 number")
        for name in _DATETIMES:
            self._set(name, self._utc(name, getattr(self, name)))
        if self.created_at is None:
            raise InvalidSnapshot(f"created_at of ticket {self.number} is required")
        if self.updated_at is None:
            self._set("updated_at", self.created_at)
        if self.uniqueid is None:
            stray = [name for name in _CALL_FIELDS if getattr(self, name) is not None]
            if stray:
                raise InvalidSnapshot(f"ticket {self.number} has call fields ({', '.join(stray)}) but no uniqueid")
        elif self.started_at is None:
            self._set("started_at", self.created_at)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: normalising in __post_init__ only

    def _enum_value(self, name: str, enum: type, value: Any) -> str:
        if type(value) is str and value in _VALUES[enum]:  # the usual case, without the Enum lookup
            return value
        try:
            return enum(value).value
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            raise InvalidSnapshot(f"{name} of ticket {self.number} must be one of {allowed}, got {value!r}") from None

    def _check_text(self, name: str, limit: int, nullable: bool) -> None:
        value = getattr(self, name)
        if value is None and nullable:
            return
        if not isinstance(value, str):
            raise InvalidSnapshot(f"{name} of ticket {self.number} must be text")
        if len(value) > limit:
            raise InvalidSnapshot(f"{name} of ticket {self.number} is longer than {limit} characters")
        if "\x00" in value:
            raise InvalidSnapshot(f"{name} of ticket {self.number} contains a NUL character")

    def _utc(self, name: str, value: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise InvalidSnapshot(f"{name} of ticket {self.number} must be a datetime")
        if value.tzinfo is timezone.utc:
            return value
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidSnapshot(f"{name} of ticket {self.number} must carry a time zone")
        return value.astimezone(timezone.utc)

    @property
    def has_call(self) -> bool:
        return self.uniqueid is not None

    def next(self, now: datetime | None = None, **changes: Any) -> TicketSnapshot:
        """The following revision of this snapshot, with ``changes`` applied and ``updated_at`` = now."""
        if "revision" in changes or "number" in changes or "created_at" in changes:
            raise InvalidSnapshot("next() keeps number, created_at and revision; change them explicitly")
        changes.setdefault("updated_at", now or datetime.now(timezone.utc))
        return dataclasses.replace(self, revision=self.revision + 1, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (datetimes as ISO 8601 strings with their offset)."""
        data = dataclasses.asdict(self)
        for name in _DATETIMES:
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TicketSnapshot:
        """Rebuild a snapshot from :meth:`to_dict` output; raises InvalidSnapshot on anything else."""
        if not isinstance(data, dict):
            raise InvalidSnapshot("a ticket snapshot must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in names)
        if unknown:
            raise InvalidSnapshot(f"unknown ticket snapshot field(s): {', '.join(unknown)}")
        values = dict(data)
        for name in _DATETIMES:
            raw = values.get(name)
            if isinstance(raw, str):
                try:
                    values[name] = datetime.fromisoformat(raw)
                except ValueError:
                    raise InvalidSnapshot(f"{name} is not an ISO 8601 datetime") from None
        try:
            return cls(**values)
        except TypeError as exc:  # a required field is missing
            raise InvalidSnapshot(f"incomplete ticket snapshot: {exc}") from None
