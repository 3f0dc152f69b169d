"""Structured logs: one JSON object per line (or plain text), with the ``extra=`` fields of each record.

Whatever library writes a log line (ours, RQ, SQLAlchemy, werkzeug), :func:`configure_logging` installs a
record factory that masks phone numbers in every record before any handler sees it: the message (merged
with its arguments), string values of ``extra=`` fields, the exception text and the stack. Callers still
mask what they log (``orders.caller.mask``); this is the net under them.

What counts as a phone number: a run of 7 or more digits, with an optional leading ``+`` and single spaces
or dashes between digits. Kept as they are: ticket numbers (``2026112800042``, ``202611289000001``),
Asterisk uniqueids and linkedids (``1714525200.17``) and dates (``2024-05-01``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

__all__ = ["JsonFormatter", "configure_logging", "install_redaction", "redact", "uninstall_redaction"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

# Stretches of digits and separators long enough to hold a number: a pattern that starts with a plain
# character class is scanned for fast, and the exact (slower) pattern below then reads only these.
_STRETCH = re.compile(r"[+\d][\d .+-]{6,}")
# A uniqueid first (its fraction may be 7+ digits), else a candidate number: 7+ digits, single separators.
_CANDIDATE = re.compile(r"(?<!\d)(?:(?P<uniqueid>\d{9,10}\.\d+)|(?P<number>\+?\d(?:[ -]?\d){6,})(?P<fraction>\.\d+)?)")
# The shape orders.ticket_numbers.is_ticket_number accepts: the date, then a 5 to 7 digit sequence.
_TICKET = re.compile(r"20\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{5,7}")
# A day as ticket numbering writes it (YYYYMMDD): kept, at the cost of an 8-digit local number that
# happens to read as a date of this century.
_DAY = re.compile(r"20\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")
_UNIQUEID = re.compile(r"\d{9,10}\.\d+")
_DATE = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])")
_SEPARATED = re.compile(r"([ -])")
_COUNTRY_CODES = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)


def _mask_number(text: str) -> str:
    """``+8613912348000`` -> ``+86*******8000``: the country code and the last 2 to 4 digits stay."""
    digits = text.replace(" ", "").replace("-", "")
    prefix = ""
    if digits[0] == "+":
        prefix = "+"
        digits = digits[1:]
        for length in (1, 2, 3):
            if digits[:length] in _COUNTRY_CODES:
                prefix += digits[:length]
                digits = digits[length:]
                break
    n = len(digits)
    keep = 4 if n >= 11 else 3 if n == 10 else 2
    return prefix + "*" * (n - keep) + digits[-keep:]


def _redact_run(text: str, uniqueid_follows: bool) -> str:
    """A candidate run: mask it, but keep the ticket numbers, dates and the uniqueid's seconds inside it."""
    if _TICKET.fullmatch(text) or _DAY.fullmatch(text):
        return text
    if " " not in text and "-" not in text and not uniqueid_follows:
        return _mask_number(text)
    # Separators may have joined a phone number to its neighbours ("ticket 2024050100001 1714525200.1",
    # "2024-05-01 13912345678"): those neighbours are kept, the digits between them are masked.
    parts = _SEPARATED.split(text)  # digit groups at even indexes, separators at odd ones
    kept = [False] * len(parts)
    for i in range(0, len(parts), 2):
        if _TICKET.fullmatch(parts[i]) or _DAY.fullmatch(parts[i]):
            kept[i] = True
        elif i + 4 < len(parts) and parts[i + 1] == parts[i + 3] == "-" and _DATE.fullmatch("".join(parts[i:i + 5])):
            kept[i] = kept[i + 2] = kept[i + 4] = True
    last = len(parts) - 1
    if uniqueid_follows and 9 <= len(parts[last]) <= 10:
        kept[last] = True
    out: list[str] = []
    segment: list[str] = []

    def flush() -> None:
        if segment:
            joined = "".join(segment)
            digits = sum(ch.isdigit() for ch in joined)
            out.append(_mask_number(joined) if digits >= 7 else joined)
            segment.clear()

    for i, part in enumerate(parts):
        if i % 2:  # a separator: stays outside the masked groups
            if segment and i + 1 <= last and not kept[i - 1] and not kept[i + 1]:
                segment.append(part)
            else:
                flush()
                out.append(part)
        elif kept[i]:
            flush()
            out.append(part)
        else:
            segment.append(part)
    flush()
    return "".join(out)


def _replace(match: re.Match) -> str:
    uniqueid, number, fraction = match.groups()
    if uniqueid:
        return uniqueid
    if not fraction:
        return _redact_run(number, False)
    # "... 1714525200.17": a uniqueid joined to the digits before it by a separator.
    is_uniqueid = 9 <= len(re.split(r"[ -]", number)[-1]) <= 10
    return _redact_run(number, is_uniqueid) + (fraction if is_uniqueid else redact(fraction))


def redact(text: str) -> str:
    """``text`` with every phone number masked (see the module's docstring for what is kept)."""
    return _STRETCH.sub(_redact_stretch, text)


def _redact_stretch(match: re.Match) -> str:
    stretch = match.group()
    run = stretch.rstrip(" .+-")
    if not run or _UNIQUEID.fullmatch(run):
        return stretch
    digits = run[1:] if run[0] == "+" else run
    if digits.isdigit():  # the usual case, one plain run of digits: no need for the exact pattern
        if len(digits) < 7 or _TICKET.fullmatch(run) or _DAY.fullmatch(run):
            return stretch
        return _mask_number(run) + stretch[len(run):]
    return _CANDIDATE.sub(_replace, stretch)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return (list if isinstance(value, list) else tuple)(_redact_value(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return {_redact_value(item) for item in value}
    return value


class _RedactingDict(dict):
    """A record's ``__dict__`` that masks what is stored into it by item: ``Logger.makeRecord`` adds the
    ``extra=`` fields that way, after the record factory has returned."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        try:
            value = _redact_value(value)
        except Exception:  # e.g. a self-referencing dict: never raise into the caller, never leak
            value = "(withheld: could not be masked)"
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # logging.makeLogRecord
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __reduce__(self):
        return dict, (dict(self),)


_exception_formatter = logging.Formatter()
_base_factory = None


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        _redact_record(record)
    except Exception:  # logging must never raise into the caller, nor let an unmasked record through
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = (
            "(log record withheld: masking its phone numbers failed)", (), None, None, None)
    record.__dict__ = _RedactingDict(record.__dict__)
    return record


def _redact_record(record: logging.LogRecord) -> None:
    if record.args or not isinstance(record.msg, str):
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not raise into the caller; keep its parts readable
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = message, ()
    record.msg = redact(record.msg)
    if record.exc_info and not record.exc_text:
        record.exc_text = _exception_formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_redaction() -> None:
    """Mask phone numbers in every log record from now on (idempotent)."""
    global _base_factory
    current = logging.getLogRecordFactory()
    if current is not _redacting_factory:
        _base_factory = current
        logging.setLogRecordFactory(_redacting_factory)


def uninstall_redaction() -> None:
    """Put back the record factory that was there before :func:`install_redaction` (tests)."""
    if logging.getLogRecordFactory() is _redacting_factory and _base_factory is not None:
        logging.setLogRecordFactory(_base_factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # An object in extra= is written as its str(), which the record factory could not see.
        return json.dumps(entry, ensure_ascii=False, default=lambda value: redact(str(value)))


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def configure_logging(level: str = "INFO", fmt: str = "auto", stream=None) -> None:
    """Log to ``stream`` (stderr) as JSON or text; "auto": text on a terminal, JSON otherwise.

    Also installs the redaction of phone numbers (:func:`install_redaction`) for every logger.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    install_redaction()
