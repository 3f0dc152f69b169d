"""The casework API: the moves people make on a ticket, its audit trail, and the moves open to a token now.

A move names the version of the ticket its maker saw, as ``If-Match: "<version>"`` (the ETag of
``GET /api/tickets/<number>``) or as ``version`` in the body; a move on a stale version changes nothing
and answers 412 (If-Match) or 409 (body), with the current version. A department token reaches only the
tickets it leads or supports: any other answers 404, exactly as an absent one, whatever it asks.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, g, jsonify, request

from web.auth import require_roles
from web.errors import ApiError
from web.tickets import (
    ALL_ROLES,
    caller_scrubber,
    etag,
    iso,
    keep,
    private_answer,
    Scrubber,
    storage_error,
    ticket_json,
    visible_ticket,
    visible_to,
)
from web.tokens import Role
from orders.cases import Actor, EventView, MoveFields
from orders.errors import InvalidMove, MoveNotAllowed, StaleTicket, StorageError, TicketLifecycleError, TicketNotFound
from orders.lifecycle import MOVES, Move, moves_from
from orders.views import TicketView

bp = Blueprint("cases", __name__, url_prefix="/api/tickets")
bp.register_error_handler(StorageError, storage_error)
bp.after_request(private_answer)

MOVERS = (Role.agent, Role.supervisor, Role.department)
_IF_MATCH = re.compile(r'\s*(?:"([0-9]{1,10})"|([0-9]{1,10}))\s*')
_MAX_VERSION = 2**31 - 1


def json_object() -> dict:
    """The request's JSON object body ({} when there is none): 415 if it is not JSON, 400 if not an object."""
    if not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "the request body must be JSON (Content-Type: application/json)")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    return data


def _caller():
    return g.caller_token


def _for_department() -> bool:
    return _caller().role is Role.department


# --- a move ------------------------------------------------------------------------------------------

def _move(name: str) -> Move:
    try:
        return Move(name)
    except ValueError:
        raise ApiError(404, "unknown_move", f"no such move; the moves are {', '.join(m.value for m in Move)}") from None


def _seen_version(body: dict) -> tuple[int, bool]:
    """The version the actor saw, and whether it came as If-Match (else the body's ``version``); 428 if neither."""
    header = request.headers.get("If-Match")
    given = body.pop("version", None)
    if header is not None:
        match = _IF_MATCH.fullmatch(header)
        if match is None:
            raise ApiError(400, "invalid_parameter", 'If-Match: must be the ticket\'s ETag, e.g. "3"')
        version = _whole_version(int(match.group(1) or match.group(2)), "If-Match")
        if given is not None and given != version:
            raise ApiError(400, "invalid_parameter", "version: differs from If-Match; send one of them")
        return version, True
    if given is None:
        raise ApiError(428, "precondition_required", "say which version of the ticket you saw: "
                                                     'an If-Match: "<version>" header or "version" in the body')
    if isinstance(given, bool) or not isinstance(given, int):
        raise ApiError(400, "invalid_body", "version: must be a whole number")
    return _whole_version(given, "version"), False


def _whole_version(value: int, name: str) -> int:
    if not 1 <= value <= _MAX_VERSION:
        raise ApiError(400, "invalid_parameter", f"{name}: a version is a whole number from 1")
    return value


def _actor() -> Actor:
    identity = _caller()
    return Actor(name=identity.name, role=identity.role, department=identity.department)


def _stale(number: str, exc: StaleTicket, by_header: bool):
    current = exc.current_version
    if current is None:  # the ticket moved between the check and the write: read what it is now
        view = current_app.extensions["hotline"].tickets.get(number)
        current = view.version if view is not None else None
    response = jsonify({"error": "stale_version",
                        "message": "the ticket changed since the version you saw; read it again, then decide",
                        "current_version": current})
    response.status_code = 412 if by_header else 409
    if current is not None:
        response.headers["ETag"] = f'"{current}"'
    return response


@bp.post("/<number>/moves/<move>")
@require_roles(*MOVERS)
def make_move(number: str, move: str):
    """Make ``move`` on ticket ``number``; answers the ticket as it is now, its version as the ETag."""
    chosen = _move(move)
    body = json_object()
    version, by_header = _seen_version(body)
    try:
        fields = MoveFields.from_dict(body)
    except InvalidMove as exc:
        raise ApiError(400, "invalid_move", str(exc)) from None
    visible_ticket(number, _caller())  # a department's move on a ticket not its own: 404 before anything
    casework = current_app.extensions["hotline"].casework
    try:
        casework.apply(number, chosen, _actor(), version, fields)
    except TicketNotFound:
        raise ApiError(404, "ticket_not_found", "no ticket has that number") from None
    except MoveNotAllowed as exc:
        raise ApiError(403, "move_not_allowed", str(exc)) from None
    except TicketLifecycleError as exc:
        raise ApiError(409, "move_not_allowed_now", str(exc)) from None
    except StaleTicket as exc:
        return _stale(number, exc, by_header)
    except InvalidMove as exc:
        raise ApiError(400, "invalid_move", str(exc)) from None
    return _moved(number)


def _moved(number: str):
    view = current_app.extensions["hotline"].tickets.get(number)
    if view is None or not visible_to(view, _caller()):
        # Made, but re-dispatched elsewhere in the same instant: nothing of it is this department's to read.
        return "", 204
    response = jsonify(ticket_json(view, _for_department()))
    response.headers["ETag"] = etag(view)
    return response


# --- reading -----------------------------------------------------------------------------------------

def _event_json(event: EventView, scrub: Scrubber) -> dict:
    return {
        "at": iso(event.at),
        "actor": event.actor,
        "role": event.role,
        "actor_department": event.actor_department,
        "move": event.move,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "reason": scrub(event.reason),
        "note": scrub(event.note),
        "details": {key: scrub(value) if isinstance(value, str) else value
                    for key, value in event.details.items()},
    }


@bp.get("/<number>/events")
@require_roles(*ALL_ROLES)
def list_events(number: str):
    """The ticket's audit trail, oldest first."""
    view = visible_ticket(number, _caller())
    try:
        events = current_app.extensions["hotline"].casework.events(number)
    except TicketNotFound:
        raise ApiError(404, "ticket_not_found", "no ticket has that number") from None
    # What agents typed into a note can hold the citizen's number: a department never reads it.
    scrub = caller_scrubber(view) if _for_department() and view.confidential else keep
    return jsonify({"number": number, "items": [_event_json(event, scrub) for event in events]})


def _open_moves(view: TicketView) -> list[Move]:
    """The moves this token may make on ``view`` now (a department's, by its lead or supporting place)."""
    identity = _caller()
    return moves_from(view.status, identity.role, identity.department, view.department, view.supporting)


def _suggestion(view: TicketView) -> dict | None:
    if _for_department():
        return None
    suggestion = current_app.extensions["hotline"].casework.suggest(view.category, view.district)
    if suggestion is None:
        return None
    return {"category": suggestion.category, "district": suggestion.district or None, "kind": suggestion.kind,
            "lead": suggestion.lead, "supporting": list(suggestion.supporting),
            "answer_days": suggestion.answer_days}


@bp.get("/<number>/moves")
@require_roles(*ALL_ROLES)
def list_moves(number: str):
    """The moves this token may make now, what each needs, and (for staff) the catalogue's dispatch."""
    view = visible_ticket(number, _caller())
    response = jsonify({
        "number": view.number,
        "status": view.status,
        "version": view.version,
        "moves": [{"move": move.value, "needs": list(MOVES[move].needs)} for move in _open_moves(view)],
        "suggestion": _suggestion(view),
    })
    response.headers["ETag"] = etag(view)
    return response
