"""The tickets API: read tickets over HTTP, scoped by the caller's token.

Staff tokens (admin, supervisor, agent) see every ticket. A department token sees only the tickets it
leads or supports: another department's ticket answers 404, as if it did not exist. A department
never receives a confidential citizen's number, and may not filter by caller at all (the filter would
tell it whether a number it guesses has a ticket).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, time, timezone

import phonenumbers
from flask import Blueprint, current_app, g, jsonify, request

from web.auth import require_roles
from web.tokens import Role
from web.errors import ApiError, error_response
from orders.caller import normalise_caller
from orders.errors import InvalidFilter, StorageError, StorageUnavailable
from orders.lifecycle import PUBLIC_STATE, Channel, Language, TicketStatus, Urgency
from orders.snapshot import CONTROL_CHARACTERS, NUMBER_MAX_LENGTH, TEXT_LIMITS
from orders.views import DEFAULT_LIMIT, MAX_LIMIT, CallView, TicketFilter, TicketView

log = logging.getLogger(__name__)

bp = Blueprint("tickets", __name__, url_prefix="/api/tickets")

_NUMBER = re.compile(r"[0-9]{1,%d}" % NUMBER_MAX_LENGTH)
_ENUMS = {"status": TicketStatus, "urgency": Urgency, "language": Language, "channel": Channel}
_TEXT = {"category": TEXT_LIMITS["category"], "department": TEXT_LIMITS["department"]}
LIST_PARAMETERS = frozenset(
    {"status", "category", "urgency", "language", "channel", "caller", "department",
     "created_from", "created_to", "limit", "offset"}
)
_SPACED_OFFSET = re.compile(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")
# An unknown parameter's name is echoed back only when it cannot be a phone number or control characters.
_ECHOABLE_NAME = re.compile(r"[A-Za-z_]{1,40}")
_MAX_OFFSET = 2**31 - 1
#: A run of digits as people write phone numbers (+86 139-1234 5678, (0898) 6666 8888, full-width digits).
_DIGIT_RUN = re.compile(r"[+\uff0b]?\d(?:[\d \t\u00a0\u3000\-.()/\uff08\uff09]*\d)?")
#: A digit run holding the caller's last this-many digits is hidden whole (last 8, national, E.164, ...).
_SCRUB_TAIL = 7

ALL_ROLES = (Role.admin, Role.supervisor, Role.agent, Role.department)


def _bad(parameter: str, message: str) -> ApiError:
    # Messages name the parameter, never echo its value: it may be a phone number.
    return ApiError(400, "invalid_parameter", f"{parameter}: {message}")


@bp.errorhandler(StorageError)
def storage_error(exc: StorageError):
    # The store's messages are already stripped of SQL parameters and numbers.
    log.error("tickets API: %s", exc)
    if isinstance(exc, StorageUnavailable):
        return error_response(503, "storage_unavailable", "the ticket database cannot be reached; try again shortly",
                              headers={"Retry-After": "5"})
    return error_response(500, "internal_error", "the ticket database failed to answer; the failure has been logged")


@bp.after_request
def private_answer(response):
    # Tickets hold personal data: never kept by a shared cache, and one token's answer is not another's.
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Vary"] = "Authorization"
    return response


# --- rendering ---------------------------------------------------------------------------------------

def iso(value: datetime | None) -> str | None:
    """A time as this API writes it: ISO 8601 in UTC with a Z."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def caller_digit_forms(ticket: TicketView) -> list[str]:
    """The caller's number as digit strings a text could contain (E.164, national, local, as received)."""
    forms = {re.sub(r"\D", "", ticket.caller_raw or "")}
    if ticket.caller_e164:
        forms.add(ticket.caller_e164.lstrip("+"))
        try:
            parsed = phonenumbers.parse(ticket.caller_e164)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None:
            national = phonenumbers.national_significant_number(parsed)
            # A landline is often written without its area code: 66123456 for 0898-66123456.
            forms.update({national, national[phonenumbers.length_of_geographical_area_code(parsed):]})
    return sorted((f for f in forms if len(f) >= _SCRUB_TAIL), key=len, reverse=True)


Scrubber = Callable[[str | None], str | None]


def keep(text: str | None) -> str | None:
    """The scrubber of text whose reader may see the caller's number."""
    return text


def caller_scrubber(ticket: TicketView) -> Scrubber:
    """Hides, in text a department reads (the API's answers and the pages alike), every digit run that
    holds the caller's number in any form: E.164, national, as received, a landline without its area code,
    written with spaces, dashes, dots or brackets between the digits (138 0013 8000), in full-width digits.
    A run that holds the number's last 7 digits is starred out whole."""
    tails = {form[-_SCRUB_TAIL:] for form in caller_digit_forms(ticket)}

    def hide(match: re.Match) -> str:
        digits = "".join(str(unicodedata.decimal(ch)) for ch in match.group() if ch.isdecimal())
        return "*" * len(match.group()) if any(tail in digits for tail in tails) else match.group()

    def scrub(text: str | None) -> str | None:
        return _DIGIT_RUN.sub(hide, text) if text and tails else text

    return scrub


def _call_json(call: CallView | None, scrub: Scrubber) -> dict | None:
    if call is None:
        return None
    return {
        "uniqueid": call.uniqueid,
        "linkedid": call.linkedid,
        "channel": scrub(call.channel),
        "dialed_number": scrub(call.dialed_number),
        "started_at": iso(call.started_at),
        "answered_at": iso(call.answered_at),
        "ended_at": iso(call.ended_at),
        "outcome": call.outcome,
    }


def ticket_json(ticket: TicketView, for_department: bool) -> dict:
    """A ticket as the API shows it; ``for_department`` hides a confidential citizen's number everywhere."""
    hide_caller = for_department and ticket.confidential
    # An Asterisk channel name can embed the caller's number (SIP/13800138000-0000002a): scrub it too.
    scrub = caller_scrubber(ticket) if hide_caller else keep
    caller = None if hide_caller else {"number": ticket.caller_e164 or ticket.caller_raw, "kind": ticket.caller_kind}
    return {
        "number": ticket.number,
        "status": ticket.status,
        "channel": ticket.channel,
        "language": ticket.language,
        "category": ticket.category,
        "urgency": ticket.urgency,
        "confidential": ticket.confidential,
        "department": ticket.department,
        "ivr_path": scrub(ticket.ivr_path),
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "caller": caller,
        "call": _call_json(ticket.call, scrub),
        "version": ticket.version,
        "summary": scrub(ticket.summary),
        "address": scrub(ticket.address),
        "district": ticket.district,
        "supporting": list(ticket.supporting),
        "merged_into": ticket.merged_into,
        "dispatched_at": iso(ticket.dispatched_at),
        "due_at": iso(ticket.due_at),
        "due_kind": ticket.due_kind,
        "overdue_since": iso(ticket.overdue_since),
        "public_state": dict(zip(("state", "detail"), PUBLIC_STATE[TicketStatus(ticket.status)])),
    }


def etag(ticket: TicketView) -> str:
    """The ticket's version as an ETag: a move sends it back in If-Match."""
    return f'"{ticket.version}"'


def visible_to(ticket: TicketView, identity) -> bool:
    """Staff see every ticket; a department the tickets it leads or supports."""
    if identity.role is not Role.department:
        return True
    return identity.department is not None and identity.department in (ticket.department, *ticket.supporting)


def visible_ticket(number: str, identity) -> TicketView:
    """Ticket ``number`` if the token may see it, else 400 (not a number) or 404."""
    if not _NUMBER.fullmatch(number):
        raise _bad("number", f"a ticket number is 1 to {NUMBER_MAX_LENGTH} digits (0-9)")
    ticket = current_app.extensions["hotline"].tickets.get(number)
    if ticket is None or not visible_to(ticket, identity):
        # Same answer for "absent" and "another department's": a department learns nothing of the others.
        raise ApiError(404, "ticket_not_found", "no ticket has that number")
    return ticket


# --- parsing the query string ------------------------------------------------------------------------

def _instant(name: str, raw: str) -> datetime:
    # An unencoded "+08:00" in a query string arrives as " 08:00": read it as the offset it was.
    raw = _SPACED_OFFSET.sub(r"\1+\2", raw)
    try:
        if "T" not in raw and " " not in raw:
            value = datetime.combine(date.fromisoformat(raw), time())
        else:
            value = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(name, "must be an ISO 8601 date or date-time, e.g. 2024-05-01 or 2024-05-01T08:00:00+08:00") from None
    # Like every time in this API, one without an offset is UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before the year 1 in UTC; datetime stops there
        raise _bad(name, "must fall between the years 1 and 9999 once converted to UTC") from None


def _whole(name: str, raw: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not low <= int(raw) <= high:
        raise _bad(name, f"must be a whole number from {low} to {high}")
    return int(raw)


def _list_filter(identity) -> tuple[TicketFilter, bool]:
    """The TicketFilter the query string asks for, and False when the token can see none of its tickets."""
    args = request.args
    unknown = sorted(set(args) - LIST_PARAMETERS)
    if unknown:
        known = f"the known ones are {', '.join(sorted(LIST_PARAMETERS))}"
        if not _ECHOABLE_NAME.fullmatch(unknown[0]):
            raise ApiError(400, "invalid_parameter", f"query: a parameter name is not known; {known}")
        raise _bad(unknown[0], f"unknown parameter; {known}")
    for name in args:
        occurrences = args.getlist(name)
        if len(occurrences) > 1:
            raise _bad(name, "give this parameter at most once")
        # PostgreSQL refuses NUL in text (a driver error, once a 500); no filter needs any control character.
        if CONTROL_CHARACTERS.search(occurrences[0]):
            raise _bad(name, "must not contain control characters (such as %00)")
    is_department = identity.role is Role.department
    if is_department and "caller" in args:
        raise _bad("caller", "a department token may not search tickets by caller")

    given = {name: value.strip() for name, value in args.items() if value.strip()}
    values: dict = {}
    for name, enum in _ENUMS.items():
        if name in given:
            try:
                values[name] = enum(given[name]).value
            except ValueError:
                raise _bad(name, "must be one of " + ", ".join(member.value for member in enum)) from None
    for name, limit in _TEXT.items():
        if name in given:
            if len(given[name]) > limit:
                raise _bad(name, f"must be at most {limit} characters")
            values[name] = given[name]
    if "caller" in given:
        settings = current_app.extensions["hotline"].settings
        caller = normalise_caller(given["caller"], settings.region, settings.local_area_code or None)
        if caller.e164 is None:
            raise _bad("caller", "must be a phone number, in E.164 (+8613800138000) or national form")
        values["caller_e164"] = caller.e164
    for name in ("created_from", "created_to"):
        if name in given:
            values[name] = _instant(name, given[name])
    if "created_from" in values and "created_to" in values and values["created_from"] >= values["created_to"]:
        raise _bad("created_to", "must be later than created_from")
    values["limit"] = _whole("limit", given["limit"], 1, MAX_LIMIT) if "limit" in given else DEFAULT_LIMIT
    values["offset"] = _whole("offset", given["offset"], 0, _MAX_OFFSET) if "offset" in given else 0

    visible = True
    if is_department:
        # Asking for another department's tickets matches nothing, like any filter that excludes them all.
        visible = values.get("department", identity.department) == identity.department
        values["department"] = identity.department
    try:
        return TicketFilter(**values), visible
    except InvalidFilter:  # checked above already; kept so a new rule in TicketFilter is a 400, not a 500
        raise ApiError(400, "invalid_parameter", "the search filters cannot be used together") from None


# --- views -------------------------------------------------------------------------------------------

@bp.get("")
@require_roles(*ALL_ROLES)
def list_tickets():
    """Tickets matching the query's filters, newest first, one page at a time."""
    identity = g.caller_token
    filters, visible = _list_filter(identity)
    tickets, total = current_app.extensions["hotline"].tickets.search(filters) if visible else ([], 0)
    for_department = identity.role is Role.department
    return jsonify({
        "items": [ticket_json(t, for_department) for t in tickets],
        "total": total,
        "limit": filters.limit,
        "offset": filters.offset,
    })


@bp.get("/<number>")
@require_roles(*ALL_ROLES)
def get_ticket(number: str):
    """One ticket by its number, with its version as the ETag."""
    identity = g.caller_token
    ticket = visible_ticket(number, identity)
    response = jsonify(ticket_json(ticket, identity.role is Role.department))
    response.headers["ETag"] = etag(ticket)
    return response
