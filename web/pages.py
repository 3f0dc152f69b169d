"""The desk: server-rendered pages for the people who work tickets (agents, departments, supervisors).

* ``/login``, ``/logout``: a token (web.auth) opens a desk session. The signed session cookie keeps the
  token's SHA-256 and when the session began, never the clear token; every request checks that hash is
  still an active token, so revoking a token closes its desk sessions too.
* ``/desk/tickets``, ``/desk/tickets/<number>`` (agents, supervisors): find a ticket; see the caller, the
  call, the caller's earlier tickets and the audit trail; make the moves the lifecycle allows now.
* ``/desk/inbox``, ``/desk/inbox/<number>`` (departments): the department's open tickets. A department
  never sees a confidential citizen's number, and sees any other caller's only masked (it calls back
  through a virtual number); another department's ticket answers 404, like an absent one.
* ``/desk/board`` (supervisors): urgent tickets' accept countdown, overdue tickets, lateness ranking.
* ``/desk/wallboard`` (supervisors): the live queue figures (web.wallboard), kept up to date by
  ``static/wallboard.js`` from ``/api/queues/stream``; without JavaScript, the figures as of the page load.
* The agent's panel (on every page of an agent whose token names its agent code): its state, log in, log
  out, pause with a reason, unpause (``/desk/agent/<action>``), and the screen pop: ``static/agent.js``
  listens to ``/api/agents/me/stream`` and opens the ticket of a call that connects to the agent.

Every POST carries the session's CSRF token (400 without it); every move form carries the ticket version
it was rendered with, so a move on a ticket someone else changed meanwhile is refused (orders.cases).
Words come from web.i18n: ``?lang=en`` switches and a cookie remembers it.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import logging
import math
import os
import re
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import redis
from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from orders.caller import mask
from orders.cases import Actor, EventView, MoveFields
from orders.errors import (InvalidMove, MoveNotAllowed, StaleTicket, StorageError, StorageUnavailable,
                           TicketLifecycleError, TicketNotFound)
from orders.lifecycle import CALL_PHASE, OPEN, PUBLIC_STATE, Move, TicketStatus, moves_from
from orders.models import Ticket
from orders.store import database_errors
from orders.views import MAX_LIMIT, TicketFilter, TicketView
from queues.agents import (PAUSE_REASONS, AgentError, AgentInactive, AgentNotFound, AgentStoreUnavailable,
                           InvalidAgent, InvalidPauseReason, known_pause_reason)
from queues.control import QueueControlError, QueueControlUnavailable
from queues.presence import AgentStatus
from web.auth import TokenIdentity, TokenStoreUnavailable
from web.errors import ApiError, endpoint_label
from web.i18n import DEFAULT, LANGUAGES, STRINGS, choose, translate, translator
from web.tickets import caller_scrubber, visible_to
from web.tokens import ApiToken, Role, hash_token
from web.virtual import desk_call, desk_panel
from web.wallboard import queues_document

__all__ = ["bp", "session_secret"]

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__, static_folder="static", static_url_path="/desk/static",
               template_folder="templates")

SECRET_FILE = "web-secret"
SECRET_BYTES = 32
SESSION_SECONDS = 12 * 3600  # a shift: log in again after that, whatever the cookie says
LANG_COOKIE = "lang"
LANG_COOKIE_SECONDS = 365 * 24 * 3600
#: The hotline's clock for people: Beijing time (China keeps no daylight saving time).
BEIJING = timezone(timedelta(hours=8), "UTC+8")
LIST_LIMIT = 50
EARLIER_LIMIT = 10
BOARD_LIMIT = 200
RANKING_DAYS = 30
_NUMBER = re.compile(r"[0-9]{1,20}")
#: The statuses in which a ticket can sit in a department's inbox: open, and past the call.
INBOX_STATUSES = tuple(s for s in TicketStatus if s in OPEN and s not in CALL_PHASE)
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


class SessionSecretError(RuntimeError):
    """The file holding the key that signs desk sessions is unusable (the message says how to fix it)."""


def session_secret(data_dir: Path) -> bytes:
    """The key that signs desk sessions: ``data_dir/web-secret``, made on first use (32 random bytes,
    mode 0600). Every web process of one hotline reads the same file, so any of them can serve a session."""
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".web-secret-", dir=path.parent)  # created 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            try:
                # A link never replaces: of two processes starting together, one key wins and both read it.
                os.link(temp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temp)
    key = path.read_bytes()
    if len(key) < SECRET_BYTES:
        raise SessionSecretError(f"{path} holds {len(key)} bytes, fewer than {SECRET_BYTES}: delete it and "
                                 f"restart, a new key is made (everyone logs in again)")
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users; chmod 600 it", path)
    return key


@bp.record_once
def _session_cookie(state) -> None:
    # Flask's session cookie is HttpOnly already; Lax keeps it off cross-site POSTs (with the CSRF token).
    state.app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")


# --- language, CSRF, headers -----------------------------------------------------------------------------

@bp.before_request
def _language() -> None:
    g.lang = choose(request.args.get("lang"), request.cookies.get(LANG_COOKIE))


@bp.before_request
def _check_csrf() -> None:
    if request.method != "POST":
        return
    expected = session.get("csrf")
    given = request.form.get("csrf", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400)


@bp.after_request
def _headers(response):
    asked = request.args.get("lang")
    if asked in LANGUAGES and request.cookies.get(LANG_COOKIE) != asked:
        response.set_cookie(LANG_COOKIE, asked, max_age=LANG_COOKIE_SECONDS, httponly=True, samesite="Lax")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint != "pages.static":
        # Pages hold personal data: no shared cache keeps them, no other site frames them.
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
    return response


def _csrf_token() -> str:
    return session.setdefault("csrf", secrets.token_urlsafe(32))


def _t(key: str, **values) -> str:
    return translate(g.get("lang", DEFAULT), key, **values)


# --- who is at the desk ----------------------------------------------------------------------------------

def _services():
    return current_app.extensions["hotline"]


def desk_identity() -> TokenIdentity | None:
    """The person of this session, or None (no session, expired, or its token revoked since)."""
    desk = session.get("desk")
    if not isinstance(desk, dict):
        return None
    began, digest = desk.get("since"), desk.get("token")
    now = time.time()
    if not isinstance(began, (int, float)) or not isinstance(digest, str) or not now - SESSION_SECONDS < began <= now:
        session.pop("desk", None)
        return None
    query = select(ApiToken.name, ApiToken.role, ApiToken.department, ApiToken.agent).where(
        ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    with database_errors("checking a desk session"), _services().session_factory() as db:
        row = db.execute(query).first()
    if row is None:
        session.pop("desk", None)
        return None
    return TokenIdentity(row.name, Role(row.role), row.department, row.agent)


def desk(*roles: Role):
    """Let a page open only for a logged-in person of one of ``roles`` (others get 403); sets ``g.who``."""
    allowed = frozenset(roles)

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            who = desk_identity()
            if who is None:
                asked = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for(".login", next=asked))
            if who.role not in allowed:
                abort(403)
            g.who = who
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _home_for(who: TokenIdentity) -> str:
    return {Role.agent: url_for(".tickets"), Role.supervisor: url_for(".board"),
            Role.department: url_for(".inbox")}.get(who.role, url_for(".home"))


def _safe_next(target: str | None) -> str | None:
    # Only a path of this site: never another host ("//evil", "/\\evil"), never a scheme.
    if target and target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target:
        return target.rstrip("?")
    return None


# --- what templates get ----------------------------------------------------------------------------------

def _when(value: datetime | None) -> str:
    if value is None:
        return translate(g.get("lang", DEFAULT), "value.none")
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _department_names() -> dict[str, tuple[str, str]]:
    if "department_names" not in g:
        g.department_names = {d.code: (d.name_zh, d.name_en)
                              for d in _services().departments.list(include_inactive=True)}
    return g.department_names


def _dept_name(code: str | None) -> str:
    if not code:
        return translate(g.get("lang", DEFAULT), "value.none")
    names = _department_names().get(code)
    if names is None:
        return code
    return names[0] if g.get("lang", DEFAULT) == "zh-CN" else names[1]


def _public_label(status: str) -> str:
    state, detail = PUBLIC_STATE[TicketStatus(status)]
    text = _t(f"public.{state}")
    return f"{text}（{_t(f'public_detail.{detail}')}）" if detail else text


def _lang_url(code: str) -> str:
    page = g.get("page_url") or request.path
    args = {k: v for k, v in request.args.items() if k != "lang"} if request.method == "GET" else {}
    return page + "?" + urlencode({**args, "lang": code})


def _countdown(due: datetime | None, now: datetime) -> dict | None:
    """What a countdown shows without JavaScript: whole minutes left (rounded down) or overdue."""
    if due is None:
        return None
    seconds = (due - now).total_seconds()
    if seconds > 0:
        return {"due": due, "late": False, "text": _t("countdown.left", minutes=math.floor(seconds / 60))}
    return {"due": due, "late": True, "text": _t("countdown.late", minutes=math.floor(-seconds / 60))}


@bp.context_processor
def _template_words() -> dict:
    lang = g.get("lang", DEFAULT)
    return {
        "t": translator(lang),
        "lang": lang,
        "languages": LANGUAGES,
        "who": g.get("who"),
        "csrf_token": _csrf_token,
        "lang_url": _lang_url,
        "when": _when,
        "dept_name": _dept_name,
        "public_label": _public_label,
        "duration": _duration,
        "percent": _percent,
        "clock": _clock,
        "seconds_between": _seconds_between,
        "reason_label": _reason_label,
        "caller_label": _caller_label,
        "agent_panel": _agent_panel(),
        "states": [s.value for s in AgentStatus],
    }


def _duration(seconds: float | None) -> str:
    """A wait or handle time as m:ss (h:mm:ss past an hour); the none mark when there is none."""
    if seconds is None:
        return _t("value.none")
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _percent(ratio: float | None) -> str:
    return _t("value.none") if ratio is None else f"{ratio * 100:.1f}%"


def _clock(value: str | float | None) -> str:
    """An API time (ISO, UTC) or a Unix time as Beijing wall-clock time."""
    if value is None or value == "":
        return _t("value.none")
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(value, timezone.utc)
    return moment.astimezone(BEIJING).strftime("%H:%M:%S")


def _seconds_between(earlier: str | None, later: str) -> float | None:
    """Seconds from one API time to another (time in a state as of the document's time)."""
    if not earlier:
        return None
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(later) - parse(earlier)).total_seconds())


def _reason_label(reason: str) -> str:
    """A pause reason in the page's language: a listed one by its label, free text as typed."""
    known = known_pause_reason(reason)
    return known.label(g.get("lang", DEFAULT)) if known else reason


def _caller_label(masked: str) -> str:
    return _t(f"caller_kind.{masked}") if masked in ("withheld", "invalid") else masked


def _agent_panel() -> dict | None:
    """What the agent's panel shows (an agent whose token names its agent code), read once per request."""
    who = g.get("who")
    if who is None or who.role is not Role.agent or not who.agent:
        return None
    if "agent_panel" not in g:
        try:
            state = _services().presence.state(who.agent)
        except redis.RedisError:
            state = None  # the panel says the state is unknown; its buttons still work
        lang = g.get("lang", DEFAULT)
        words = {f"state.{s.value}": _t(f"agent_state.{s.value}") for s in AgentStatus}
        words |= {f"reason.{r.key}": r.label(lang) for r in PAUSE_REASONS}
        words |= {key: _t(f"agent.{key}") for key in ("since", "pop", "unknown", "on_call")}
        g.agent_panel = {"code": who.agent, "state": state, "call": state.call.call_id if state and state.call else "",
                         "reasons": [(r.key, r.label(lang)) for r in PAUSE_REASONS], "words": words}
    return g.agent_panel


def _page(template: str, code: int = 200, /, **context):
    return render_template(template, **context), code


# --- errors as pages -------------------------------------------------------------------------------------

@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    code = exc.code or 500
    key = f"error.{code}" if code in (400, 403, 404, 405, 500, 503) else "error.other"
    return _page("error.html", code, code=code, message=_t(key))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    # Frames only, as web.errors does: an exception's text can hold a caller's number.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s on desk page %s\n%s", type(exc).__name__, endpoint_label(), frames)
    return _page("error.html", 500, code=500, message=_t("error.500"))


@bp.errorhandler(StorageError)
@bp.errorhandler(TokenStoreUnavailable)
def _storage_error(exc: Exception):
    # The store's messages carry no SQL parameter nor number (orders.store.database_errors).
    log.error("desk page %s: %s", endpoint_label(), exc)
    code = 503 if isinstance(exc, (StorageUnavailable, TokenStoreUnavailable)) else 500
    return _page("error.html", code, code=code, message=_t(f"error.{code}"))


# --- logging in and out ----------------------------------------------------------------------------------

@bp.get("/")
def home():
    """Each role's desk; the login page for a stranger."""
    who = desk_identity()
    if who is None:
        return redirect(url_for(".login"))
    g.who = who
    if who.role in (Role.agent, Role.supervisor, Role.department):
        return redirect(_home_for(who))
    return _page("home.html")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """A token field; the token is checked by the app's TokenAuthenticator and never shown back."""
    next_page = _safe_next(request.values.get("next"))
    if request.method == "GET":
        who = desk_identity()
        if who is not None:
            return redirect(next_page or _home_for(who))
        return _page("login.html", next_page=next_page)
    token = request.form.get("token", "").strip()
    if not token:
        return _page("login.html", 400, next_page=next_page, problem=_t("login.empty"))
    who = current_app.extensions["web.auth"].identify(token)
    if who is None:
        return _page("login.html", 403, next_page=next_page, problem=_t("login.refused"))
    # A fresh session (and CSRF token) at login: a session planted before it is worth nothing after.
    session.clear()
    session["desk"] = {"token": hash_token(token), "since": time.time()}
    _csrf_token()
    return redirect(next_page or _home_for(who))


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """GET asks to confirm (a link cannot log anyone out); POST ends the session."""
    if request.method == "GET":
        who = desk_identity()
        if who is None:
            return redirect(url_for(".login"))
        g.who = who
        return _page("logout.html")
    session.clear()
    flash("logout.done")
    return redirect(url_for(".login"))


# --- agents and supervisors: tickets ---------------------------------------------------------------------

HOTLINE = (Role.agent, Role.supervisor)


@bp.get("/desk/tickets")
@desk(*HOTLINE)
def tickets():
    """Find a ticket by number; the newest tickets, optionally of one status."""
    number = request.args.get("number", "").strip()
    missing = None
    if number:
        if _NUMBER.fullmatch(number) and _services().tickets.get(number) is not None:
            return redirect(url_for(".ticket", number=number))
        missing = number[:40]
    status = request.args.get("status", "")
    if status not in {s.value for s in TicketStatus}:
        status = ""
    found, total = _services().tickets.search(TicketFilter(status=status or None, limit=LIST_LIMIT))
    return _page("tickets.html", 404 if missing else 200, found=found, total=total, missing=missing,
                 number=number, status=status, statuses=[s.value for s in TicketStatus])


@bp.get("/desk/tickets/<number>")
@desk(*HOTLINE)
def ticket(number: str):
    """One ticket as the agent works it."""
    return _agent_ticket(number)


@bp.post("/desk/tickets/<number>/<move>")
@desk(*HOTLINE)
def ticket_move(number: str, move: str):
    """Make ``move`` on the ticket; back to its page with what happened."""
    if _hotline_ticket(number) is None:
        abort(404)
    return _make_move(number, move, _agent_ticket, url_for(".ticket", number=number))


def _hotline_ticket(number: str) -> TicketView | None:
    return _services().tickets.get(number) if _NUMBER.fullmatch(number) else None


def _agent_ticket(number: str, status: int = 200, problem: dict | None = None):
    services = _services()
    ticket = _hotline_ticket(number)
    if ticket is None:
        abort(404)
    g.page_url = url_for(".ticket", number=number)
    earlier: list[TicketView] | None = None
    if ticket.caller_e164:
        same_caller, _ = services.tickets.search(TicketFilter(caller_e164=ticket.caller_e164,
                                                              limit=EARLIER_LIMIT + 1))
        earlier = [t for t in same_caller if t.number != ticket.number][:EARLIER_LIMIT]
    moves = [m.value for m in moves_from(ticket.status, g.who.role)]
    now = datetime.now(timezone.utc)
    return _page("ticket.html", status, ticket=ticket, earlier=earlier, now=now,
                 countdown=_countdown(ticket.due_at, now) if ticket.due_kind == "accept" else None,
                 events=[_event_row(e, lambda text: text) for e in services.casework.events(number)],
                 **_move_context(ticket, moves, problem, lambda m: url_for(".ticket_move", number=number, move=m)))


# --- departments: inbox ----------------------------------------------------------------------------------

@bp.get("/desk/inbox")
@desk(Role.department)
def inbox():
    """The department's open tickets (lead or supporting), soonest deadline first."""
    department = g.who.department
    rows: list[TicketView] = []
    truncated = False
    for status in INBOX_STATUSES:
        found, total = _services().tickets.search(TicketFilter(status=status.value, department=department,
                                                               limit=MAX_LIMIT))
        truncated |= total > len(found)
        rows += [_for_department(t) for t in found]
    far = datetime.max.replace(tzinfo=timezone.utc)
    rows.sort(key=lambda t: (t.due_at or far, t.created_at))
    now = datetime.now(timezone.utc)
    return _page("inbox.html", rows=rows, truncated=truncated, now=now,
                 countdowns={t.number: _countdown(t.due_at, now) for t in rows if t.due_kind == "accept"})


@bp.get("/desk/inbox/<number>")
@desk(Role.department)
def inbox_ticket(number: str):
    """One of the department's tickets, without the citizen's number."""
    return _department_ticket(number)


@bp.post("/desk/inbox/<number>/<move>")
@desk(Role.department)
def inbox_move(number: str, move: str):
    """Make a department ``move`` on one of its tickets."""
    if _own_ticket(number) is None:
        abort(404)  # before any move is tried: another department learns nothing, not even the status
    return _make_move(number, move, _department_ticket, url_for(".inbox_ticket", number=number))


#: Refusals of "call the citizen" the page explains in words (others: virtual.problem.other).
_VIRTUAL_PROBLEMS = frozenset({"no_caller_number", "pool_exhausted", "call_failed", "no_department_phone"})


@bp.post("/desk/inbox/<number>/virtual-call")
@desk(Role.department)
def inbox_virtual_call(number: str):
    """Reach the citizen through a virtual number: bind if need be, then (with Twilio) ring the desk."""
    ticket = _own_ticket(number)
    if ticket is None:
        abort(404)
    try:
        done = desk_call(ticket, g.who.department, request.form.get("from_phone") or None)
    except ApiError as exc:
        key = exc.error if exc.error in _VIRTUAL_PROBLEMS else "other"
        return _department_ticket(number, exc.status, {"key": f"virtual.problem.{key}", "detail": exc.message})
    flash(done)
    return redirect(url_for(".inbox_ticket", number=number))


def _own_ticket(number: str) -> TicketView | None:
    ticket = _hotline_ticket(number)
    if ticket is None or g.who.role is not Role.department or not visible_to(ticket, g.who):
        return None
    return ticket


def _department_ticket(number: str, status: int = 200, problem: dict | None = None):
    ticket = _own_ticket(number)
    if ticket is None:
        abort(404)
    g.page_url = url_for(".inbox_ticket", number=number)
    scrub = caller_scrubber(ticket)
    shown = _for_department(ticket)
    caller = None if ticket.confidential else _masked_caller(ticket)
    moves = [m.value for m in moves_from(ticket.status, Role.department, g.who.department, ticket.department,
                                         ticket.supporting)]
    if problem is not None:
        problem = {**problem, "detail": scrub(problem.get("detail"))}
    now = datetime.now(timezone.utc)
    return _page("inbox_ticket.html", status, ticket=shown, caller=caller, now=now,
                 virtual=desk_panel(ticket, g.who.department),
                 countdown=_countdown(shown.due_at, now) if shown.due_kind == "accept" else None,
                 events=[_event_row(e, scrub) for e in _services().casework.events(number)],
                 **_move_context(shown, moves, problem, lambda m: url_for(".inbox_move", number=number, move=m)))


def _masked_caller(ticket: TicketView) -> str:
    masked = mask(ticket.caller_e164 or ticket.caller_raw)
    return _t(f"caller_kind.{masked}") if masked in ("withheld", "invalid") else masked


def _for_department(ticket: TicketView) -> TicketView:
    """The ticket with no trace of the caller's number: no number, no call records (channel names can
    hold it), and the number scrubbed from the text people wrote."""
    scrub = caller_scrubber(ticket)
    return dataclasses.replace(ticket, caller_raw="", caller_e164=None, calls=(), ivr_path=scrub(ticket.ivr_path),
                               summary=scrub(ticket.summary), address=scrub(ticket.address),
                               district=scrub(ticket.district), category=scrub(ticket.category))


# --- moves -----------------------------------------------------------------------------------------------

def _move_fields(move: Move, form) -> MoveFields:
    """What the move's form sent; empty fields are missing (Casework says which it needs)."""
    def text(name: str) -> str | None:
        return form.get(name, "").strip() or None

    if move is Move.register:
        return MoveFields(category=text("category"), summary=text("summary"), address=text("address"),
                          district=text("district"), confidential=True if form.get("confidential") else None)
    if move is Move.dispatch:
        return MoveFields(lead=text("lead"),
                          supporting=tuple(code for code in form.getlist("supporting") if code.strip()))
    if move in (Move.resolve, Move.progress, Move.reply):
        return MoveFields(note=text("note"))
    if move in (Move.return_, Move.reopen):
        return MoveFields(reason=text("reason"))
    if move is Move.merge:
        return MoveFields(into=text("into"))
    return MoveFields()


def _make_move(number: str, move_name: str, render, done_url: str):
    """Apply the posted move as the person at the desk; on a refusal show the ticket again, saying why."""
    try:
        move = Move(move_name)
    except ValueError:
        abort(404)
    version = request.form.get("version", "")
    if not re.fullmatch(r"[0-9]{1,9}", version):
        abort(400)
    who = g.who
    try:
        fields = _move_fields(move, request.form)
        _services().casework.apply(number, move, Actor(who.name, who.role, who.department), int(version), fields)
    except TicketNotFound:
        abort(404)
    except StaleTicket:
        return render(number, 409, {"key": "problem.stale", "move": move.value, "values": request.form})
    except MoveNotAllowed as exc:
        return render(number, 403, {"key": "problem.not_allowed", "detail": str(exc), "move": move.value,
                                    "values": request.form})
    except TicketLifecycleError as exc:
        return render(number, 409, {"key": "problem.lifecycle", "detail": str(exc), "move": move.value,
                                    "values": request.form})
    except InvalidMove as exc:
        return render(number, 400, {"key": "problem.invalid", "detail": str(exc), "move": move.value,
                                    "values": request.form})
    flash(f"done.{move.value}")
    return redirect(done_url)


def _move_context(ticket: TicketView, moves: list[str], problem: dict | None, move_url) -> dict:
    """What the move forms need: the departments and the catalogue's suggestion for a dispatch, and the
    values a refused form had (so nobody types a note twice)."""
    services = _services()
    departments, suggestion, categories, districts = [], None, [], []
    if "dispatch" in moves:
        departments = services.departments.list()
        suggestion = services.casework.suggest(ticket.category, ticket.district)
    if "register" in moves:
        rules = services.departments.rules()
        categories = sorted({r.category for r in rules})
        districts = sorted({r.district for r in rules if r.district})
    failed = problem.get("move") if problem else None
    values = problem.get("values") if problem else None

    def prior(move: str, name: str, default: str = "") -> str:
        return values.get(name, "") if values is not None and failed == move else default

    def prior_list(move: str, name: str, default=()) -> list[str]:
        return values.getlist(name) if values is not None and failed == move else list(default)

    return {"moves": moves, "move_url": move_url, "problem": problem, "departments": departments,
            "suggestion": suggestion, "suggestion_text": _suggestion_text(suggestion),
            "categories": categories, "districts": districts, "prior": prior, "prior_list": prior_list}


def _suggestion_text(suggestion) -> str | None:
    if suggestion is None:
        return None
    supporting = ""
    if suggestion.supporting:
        supporting = _t("moves.suggested_supporting", names="、".join(_dept_name(c) for c in suggestion.supporting)
                        if g.lang == "zh-CN" else ", ".join(_dept_name(c) for c in suggestion.supporting))
    return _t("moves.suggested", lead=_dept_name(suggestion.lead), supporting=supporting,
              kind=_t(f"kind.{suggestion.kind}"), days=suggestion.answer_days)


def _event_row(event: EventView, scrub: Callable[[str | None], str | None]) -> dict:
    """One line of the audit trail, in words; ``scrub`` hides the caller's number from departments."""
    details = []
    for key, value in event.details.items():
        if key in ("lead", "department"):
            shown = _dept_name(str(value))
        elif key == "supporting":
            shown = ", ".join(_dept_name(str(c)) for c in value) if value else _t("value.none")
        elif key == "due_at":
            try:
                shown = _when(datetime.fromisoformat(str(value)))
            except ValueError:
                shown = str(value)
        elif key == "due_kind":
            shown = _t(f"due_kind.{value}") if value in ("accept", "answer") else str(value)
        elif key == "confidential":
            shown = _t("value.yes" if value else "value.no")
        else:
            shown = str(value)
        label = f"detail.{key}"
        details.append(scrub(_t(label, value=shown) if label in _known_details() else f"{key}: {shown}"))
    move_key = f"move.{event.move}"
    return {
        "at": _when(event.at),
        "actor": scrub(event.actor),
        "role": _t(f"role.{event.role}") if event.role in {r.value for r in Role} | {"system"} else event.role,
        "department": _dept_name(event.actor_department) if event.actor_department else None,
        "move": _t(move_key) if move_key in _known_moves() else event.move,
        "from_status": _status_label(event.from_status),
        "to_status": _status_label(event.to_status),
        "reason": scrub(event.reason),
        "note": scrub(event.note),
        "details": details,
    }


@functools.cache
def _known_details() -> frozenset[str]:
    return frozenset(f"detail.{k}" for k in ("category", "confidential", "lead", "supporting", "due_at",
                                              "due_kind", "department", "into"))


@functools.cache
def _known_moves() -> frozenset[str]:
    return frozenset({f"move.{m.value}" for m in Move} | {"move.overdue", "move.warned"})


def _status_label(status: str) -> str:
    return _t(f"status.{status}") if status in {s.value for s in TicketStatus} else status


# --- supervisors: the board ------------------------------------------------------------------------------

def urgent_awaiting_acceptance(session_factory, limit: int = BOARD_LIMIT) -> list:
    """Open tickets whose urgent accept deadline runs, soonest first (TicketFilter cannot ask for it)."""
    query = (select(Ticket.number, Ticket.category, Ticket.district, Ticket.department, Ticket.status,
                    Ticket.dispatched_at, Ticket.due_at, Ticket.overdue_since)
             .where(Ticket.due_kind == "accept", Ticket.status.in_(sorted(s.value for s in OPEN)))
             .order_by(Ticket.due_at, Ticket.id).limit(limit))
    with database_errors("reading urgent tickets"), session_factory() as db:
        return db.execute(query).all()


#: Where a late ticket is still the department's to finish: as Casework.overdue_ranking counts "overdue now"
#: (a late reply, or a ticket the department returned, is the hotline's to close or dispatch again).
WITH_DEPARTMENT = (TicketStatus.dispatched, TicketStatus.accepted, TicketStatus.in_progress)


def overdue_open(session_factory, limit: int = BOARD_LIMIT) -> list:
    """Tickets past a deadline and still with their department, longest overdue first."""
    query = (select(Ticket.number, Ticket.category, Ticket.district, Ticket.department, Ticket.status,
                    Ticket.urgency, Ticket.due_kind, Ticket.overdue_since)
             .where(Ticket.overdue_since.is_not(None), Ticket.status.in_([s.value for s in WITH_DEPARTMENT]))
             .order_by(Ticket.overdue_since, Ticket.id).limit(limit))
    with database_errors("reading overdue tickets"), session_factory() as db:
        return db.execute(query).all()


@bp.get("/desk/board")
@desk(Role.supervisor)
def board():
    """Urgent tickets counting down to their accept deadline, overdue tickets, departments by lateness."""
    services = _services()
    now = datetime.now(timezone.utc)
    urgent = urgent_awaiting_acceptance(services.session_factory)
    return _page("board.html", now=now, urgent=urgent, countdowns={row.number: _countdown(row.due_at, now)
                                                                   for row in urgent},
                 overdue=overdue_open(services.session_factory),
                 ranking=services.casework.overdue_ranking(now - timedelta(days=RANKING_DAYS), now),
                 minutes=services.settings.urgent_accept_minutes)


# --- supervisors: the wallboard --------------------------------------------------------------------------

@bp.get("/desk/wallboard")
@desk(Role.supervisor)
def wallboard():
    """The queues live: figures per queue and for the hotline, agents by state, abandoned callers, call-backs,
    and the staffing Erlang C says the load needs."""
    try:
        document = queues_document(_services())
    except redis.RedisError as exc:
        log.error("wallboard: Redis failed (%s)", type(exc).__name__)
        return _page("error.html", 503, code=503, message=_t("wall.unavailable"))
    except AgentStoreUnavailable as exc:
        log.error("wallboard: %s", exc)
        return _page("error.html", 503, code=503, message=_t("error.503"))
    words = {key: _t(key) for key in STRINGS[DEFAULT] if key.startswith(("wall.", "agent_state.", "call_back."))}
    words |= {key: _t(key) for key in ("caller_kind.withheld", "caller_kind.invalid", "value.none")}
    words |= {f"reason.{r.key}": r.label(g.lang) for r in PAUSE_REASONS}
    return _page("wallboard.html", doc=document, words=words)


# --- agents: their own state -----------------------------------------------------------------------------

AGENT_ACTIONS = ("login", "logout", "pause", "unpause")


@bp.post("/desk/agent/<action>")
@desk(Role.agent)
def agent_action(action: str):
    """Log in, log out, pause (with a reason) or unpause the agent of this session; back to the page it was on,
    saying what was asked of Asterisk (the state shows Asterisk's answer when it comes)."""
    code = g.who.agent
    if action not in AGENT_ACTIONS:
        abort(404)
    if not code:
        abort(403)
    back = _safe_next(request.form.get("next")) or url_for(".tickets")
    agent_desk = _services().desk
    try:
        if action == "pause":
            agent_desk.pause(code, request.form.get("reason", ""))
        else:
            getattr(agent_desk, action)(code)
    except QueueControlUnavailable as exc:
        log.warning("agent %s %s from the desk: %s", code, action, exc)
        flash("agent.problem.unavailable", "problem")
    except QueueControlError as exc:
        log.warning("agent %s %s from the desk refused: %s", code, action, exc)
        flash("agent.problem.refused", "problem")
    except InvalidPauseReason:
        flash("agent.problem.reason", "problem")
    except (AgentNotFound, AgentInactive, InvalidAgent) as exc:
        log.warning("agent %s %s from the desk: %s", code, action, exc)
        flash("agent.problem.not_ready", "problem")
    except AgentError as exc:  # the agents' database failed
        log.error("agent %s %s from the desk: %s", code, action, exc)
        flash("agent.problem.unavailable", "problem")
    else:
        flash(f"agent.asked.{action}")
    return redirect(back)
