"""The queues API: the live queue figures for supervisors, the agents' states and desk actions, and the live
streams (server-sent events) the wallboard and the agent's screen listen to.

* ``GET /api/queues`` (supervisor, admin): the wallboard's document (web.wallboard).
* ``GET /api/agents``: every agent's state (supervisor, admin); an agent's token sees only its own agent.
* ``POST /api/agents/<code>/login|logout|pause|unpause``: 202 with what was asked of Asterisk; the state
  changes when Asterisk's events confirm it. An agent's token acts only for its own agent.
* ``GET /api/queues/stream`` and ``GET /api/agents/me/stream``: text/event-stream (web.live).

The GET endpoints also take the desk session (the pages' cookie): a browser's EventSource cannot send an
Authorization header. The POSTs take a bearer token only; the pages post their own CSRF-checked forms.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from orders.errors import StorageError
from queues.agents import (AgentInactive, AgentNotFound, AgentStoreUnavailable, InvalidAgent, InvalidPauseReason,
                           MAX_REASON_LENGTH)
from queues.control import QueueControlError, QueueControlUnavailable
from queues.desk import DeskRequest
from web import live
from web.auth import TokenIdentity, authenticate, require_roles
from web.cases import json_object
from web.errors import ApiError, error_response
from web.pages import desk_identity
from web.tickets import private_answer, storage_error
from web.tokens import Role
from web.wallboard import agent_json, agents_listing, queues_document

__all__ = ["bp", "live_hub", "close_live"]

bp = Blueprint("queues", __name__, url_prefix="/api")
bp.register_error_handler(StorageError, storage_error)
bp.after_request(private_answer)

SUPERVISORS = (Role.supervisor, Role.admin)
SETTLE_SECONDS = 0.5  # a burst of events is one wallboard update: at most two a second
REFRESH_SECONDS = 30.0  # the wallboard is sent again this often anyway (call-backs and wrap-ups change silently)
DOCUMENT_MAX_AGE = 5.0  # streams share one document per change, and none older than this
_hub_lock = threading.Lock()
log = logging.getLogger(__name__)


@bp.errorhandler(redis.RedisError)
def _figures_unavailable(exc):
    log.warning("queues API: Redis failed (%s)", type(exc).__name__)
    return error_response(503, "figures_unavailable", "the live queue figures cannot be read right now; try again "
                          "shortly", headers={"Retry-After": "5"})


@bp.errorhandler(AgentStoreUnavailable)
def _agents_unavailable(exc):
    log.warning("queues API: %s", exc)
    return error_response(503, "storage_unavailable", "the agents' database cannot be reached; try again shortly",
                          headers={"Retry-After": "5"})


def _services():
    return current_app.extensions["hotline"]


def _caller(*roles: Role) -> TokenIdentity:
    """The bearer token's identity, else the desk session's; 401 without either, 403 for another role."""
    if request.headers.get("Authorization"):
        identity = authenticate()
    else:
        identity = desk_identity()
        if identity is None:
            raise ApiError(401, "unauthorized", "this endpoint needs an 'Authorization: Bearer <token>' header "
                           "or a desk session", headers={"WWW-Authenticate": 'Bearer realm="hotline"'})
    if identity.role not in roles:
        raise ApiError(403, "forbidden", f"a {identity.role.value} token may not use this endpoint")
    g.caller_token = identity
    return identity


def _own_agent(identity: TokenIdentity) -> str:
    if not identity.agent:
        raise ApiError(403, "forbidden", "this agent token names no agent; ask an administrator for one that does")
    return identity.agent


# --- figures and states -------------------------------------------------------------------------------------

@bp.get("/queues")
def get_queues():
    """Per queue and for the hotline: figures, agents by state, staffing; abandoned callers; call-backs."""
    _caller(*SUPERVISORS)
    return jsonify(queues_document(_services()))


@bp.get("/agents")
def list_agents():
    """Every agent's state; an agent's token gets its own agent only."""
    identity = _caller(*SUPERVISORS, Role.agent)
    code = _own_agent(identity) if identity.role is Role.agent else None
    return jsonify({"items": agents_listing(_services(), code)})


# --- desk actions -------------------------------------------------------------------------------------------

def _act(code: str, action: str) -> Response:
    identity = g.caller_token
    if identity.role is Role.agent and _own_agent(identity) != code:
        raise ApiError(403, "forbidden", "an agent's token acts only for its own agent")
    body = json_object()
    allowed = {"reason"} if action == "pause" else set()
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)[:200]}"
                                            + (f"; the field is {', '.join(allowed)}" if allowed else ""))
    desk = _services().desk
    try:
        if action == "pause":
            reason = body.get("reason")
            if not isinstance(reason, str):
                raise ApiError(400, "invalid_body", f"reason: give one of the pause reasons' keys or up to "
                                                    f"{MAX_REASON_LENGTH} characters of text")
            asked = desk.pause(code, reason)
        else:
            asked = getattr(desk, action)(code)
    except AgentNotFound:
        raise ApiError(404, "agent_not_found", "no agent has that code") from None
    except InvalidPauseReason as exc:
        raise ApiError(400, "invalid_body", f"reason: {exc}") from None
    except AgentInactive as exc:
        raise ApiError(409, "agent_inactive", str(exc)) from None
    except InvalidAgent as exc:
        raise ApiError(409, "agent_not_ready", str(exc)) from None
    except QueueControlUnavailable as exc:
        log.warning("agent %s %s: %s", code, action, exc)
        raise ApiError(503, "asterisk_unavailable", "Asterisk cannot be reached right now, so nothing was changed; "
                       "try again shortly", headers={"Retry-After": "10"}) from None
    except QueueControlError as exc:
        raise ApiError(409, "asterisk_refused", str(exc)[:300]) from None
    response = jsonify(_asked_json(asked))
    response.status_code = 202
    return response


def _asked_json(asked: DeskRequest) -> dict:
    return {"action": asked.action, "agent": asked.code, "interface": asked.interface, "queues": list(asked.queues),
            "paused": asked.paused, "reason": asked.reason, "confirmed": False,
            "message": "asked of Asterisk; the agent's state changes when Asterisk's events confirm it"}


@bp.post("/agents/<code>/login")
@require_roles(*SUPERVISORS, Role.agent)
def agent_login(code: str):
    """Put the agent's phone in every queue it serves (paused again if it logged out paused)."""
    return _act(code, "login")


@bp.post("/agents/<code>/logout")
@require_roles(*SUPERVISORS, Role.agent)
def agent_logout(code: str):
    """Take the agent's phone out of every queue."""
    return _act(code, "logout")


@bp.post("/agents/<code>/pause")
@require_roles(*SUPERVISORS, Role.agent)
def agent_pause(code: str):
    """Pause the agent in all its queues, with a reason."""
    return _act(code, "pause")


@bp.post("/agents/<code>/unpause")
@require_roles(*SUPERVISORS, Role.agent)
def agent_unpause(code: str):
    """Make the agent available again in all its queues."""
    return _act(code, "unpause")


# --- live streams -------------------------------------------------------------------------------------------

def live_hub(app) -> live.LiveHub:
    """The app's hub, made with the first stream (an app that never streams never subscribes)."""
    with _hub_lock:
        hub = app.extensions.get("web.live")
        if hub is None:
            services = app.extensions["hotline"]
            hub = app.extensions["web.live"] = live.LiveHub(
                services.redis, figures_channel=services.queue_statistics.channel,
                agents_channel=f"{services.presence.prefix}agents",
                max_streams=services.settings.web_live_streams)
        return hub


def close_live(app) -> None:
    """End the app's live streams and its Redis listener (the server's shutdown)."""
    hub = app.extensions.get("web.live")
    if hub is not None:
        hub.close()


def _guarded(build):
    """``build()``'s events, or an ``unavailable`` event while Redis or the database fail."""
    def run(*args) -> str:
        try:
            return build(*args)
        except (redis.RedisError, StorageError, AgentStoreUnavailable) as exc:
            log.warning("live stream: cannot read the figures (%s)", type(exc).__name__,
                        extra={"event": "web.live.unreadable"})
            return live.event("unavailable", {"error": "figures_unavailable",
                                              "message": "the live figures cannot be read right now; still trying"})
    return run


def _open(hub: live.LiveHub, kinds, agent: str | None = None) -> live.Inbox:
    try:
        return hub.open(kinds, agent)
    except live.StreamsFull as exc:
        raise ApiError(503, "streams_full", f"no live stream can be opened now ({exc}); poll the JSON API or "
                       "try again shortly", headers={"Retry-After": "30"}) from None


def _streaming(body, inbox: live.Inbox) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must pass each event on at once
    response.call_on_close(inbox.close)
    return response


@bp.get("/queues/stream")
def queues_stream():
    """The wallboard's document on connect, again after each change (at most two a second), every 30 s, and
    heartbeat comments in between."""
    _caller(*SUPERVISORS)
    hub = live_hub(current_app._get_current_object())
    services = _services()
    inbox = _open(hub, {live.FIGURES, live.AGENTS})
    last = [0.0]

    @_guarded
    def document(_messages=None) -> str:
        text = live.event("queues", hub.latest("queues", lambda: queues_document(services), DOCUMENT_MAX_AGE))
        last[0] = time.monotonic()
        return text

    def idle() -> str:
        return document() if time.monotonic() - last[0] >= REFRESH_SECONDS else live.HEARTBEAT

    return _streaming(live.event_stream(hub, inbox, opening=document, turn=document, idle=idle,
                                        settle=SETTLE_SECONDS), inbox)


@bp.get("/agents/me/stream")
def agent_stream():
    """The agent's state on connect and at each change; a ``call`` event when a call with a ticket connects
    to the agent (the screen pop)."""
    code = _own_agent(_caller(Role.agent))
    hub = live_hub(current_app._get_current_object())
    services = _services()
    tickets = url_for("pages.tickets")
    inbox = _open(hub, {live.AGENTS}, agent=code)
    announced = [""]  # the call last announced: a call is announced once per stream

    @_guarded
    def state(messages=()) -> str:
        now = services.presence.state(code)
        if not messages and now.call is not None:
            announced[0] = now.call.call_id  # a call already on when the stream opened was popped before
        out = [live.event("state", agent_json(now))]
        for _, message in messages:
            if not message:  # a resync: the state above says it all
                continue
            call_id, ticket = message.get("call_id") or "", message.get("ticket") or ""
            if message.get("state") == "on_call" and ticket.isdigit() and call_id != announced[0]:
                announced[0] = call_id
                out.append(live.event("call", {"call_id": call_id, "ticket": ticket, "queue": message.get("queue"),
                                               "url": f"{tickets}/{ticket}"}))
        return "".join(out)

    return _streaming(live.event_stream(hub, inbox, opening=state, turn=state), inbox)
