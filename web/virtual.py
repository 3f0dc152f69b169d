"""Virtual numbers over HTTP: the pool, a ticket's bindings, call receipts, "call the citizen", and
Twilio's voice webhooks (virtual_numbers.broker does the work; shared/DESIGN.md, "Virtual numbers").

* ``/api/virtual-numbers``: the pool and its figures (staff read it, an admin changes it);
  ``/api/virtual-numbers/receipts``: call receipts (admin and supervisors: all; a department: its own).
* ``/api/tickets/<number>/bindings``: a ticket's bindings, scoped like web.tickets (another department's
  ticket answers 404); ``/api/bindings/<id>``: revoke; ``/api/bindings/<id>/call``: ring the department's
  phone, then the citizen, both seeing only the virtual number (Twilio's REST API).
* ``/twilio/voice`` (+ ``/extension``, ``/outbound``) and ``/twilio/status``: every request must carry a
  valid ``X-Twilio-Signature`` (403 and an audit line otherwise). A department reaching a citizen is put
  into a ``<Conference>`` named by the call id and the citizen's leg is placed server-side, so the
  citizen's number travels only from this server to Twilio's API, never in an answer.

A department never receives a citizen's number: bindings and receipts carry it masked only.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from base import metrics
from ivr.errors import MenuError
from ivr.menu import load_menu
from orders.caller import mask, normalise_caller
from orders.departments import DepartmentNotFound
from orders.errors import StorageError
from orders.views import TicketView
from queues.control import QueueControlError, QueueControlUnavailable
from virtual_numbers.errors import (BindingNotFound, BrokerError, InvalidParty, InvalidRequest, NumberInUse,
                                    PoolExhausted, ReceiptNotFound, UnknownNumber, UnknownTicket)
from virtual_numbers.views import (CALL_RECORDED, DIRECTIONS, ENTER_EXTENSION, EXTENSION_REQUIRED, NOT_IN_SERVICE,
                                   TO_CITIZEN, BindingView, NumberView, Receipt, Resolution)
from web.auth import require_roles
from web.cases import json_object
from web.errors import ApiError, error_response
from web.tickets import ALL_ROLES, iso, private_answer, storage_error, visible_ticket
from web.tokens import Role

log = logging.getLogger(__name__)

bp = Blueprint("virtual", __name__)
bp.register_error_handler(StorageError, storage_error)
bp.after_request(private_answer)

STAFF = (Role.admin, Role.supervisor, Role.agent)
BINDERS = (Role.agent, Role.supervisor, Role.department)
VIRTUAL_UNAVAILABLE = "virtual-unavailable"
#: Twilio's <Say> languages for the menu's two languages.
SAY_LANGUAGES = (("zh-CN", "zh-CN"), ("en", "en-US"))
_BINDING_FIELDS = {"department", "direction", "record"}
_CALL_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_EXTENSION = re.compile(r"[0-9]{1,8}")
_ID = re.compile(r"[0-9]{1,12}")
_EXTENSION_SECONDS = 8
_FAILED_CALL_STATES = ("busy", "no-answer", "failed", "canceled")

_FORGED = metrics.counter("hotline_twilio_forged_webhooks_total",
                          "Twilio webhook requests refused for a missing or wrong signature")


def _services():
    return current_app.extensions["hotline"]


def _broker():
    return _services().broker


def _caller():
    return g.caller_token


# --- JSON --------------------------------------------------------------------------------------------

def number_json(view: NumberView) -> dict:
    return {"number": view.number, "state": view.state, "added_at": iso(view.added_at),
            "live_bindings": view.live_bindings}


def binding_json(view: BindingView) -> dict:
    """A binding as every role sees it: the citizen's number masked only."""
    return {"id": view.id, "ticket_number": view.ticket_number, "citizen": view.citizen_masked,
            "department": view.department, "department_number": view.department_number,
            "virtual_number": view.virtual_number, "extension": view.extension, "mode": view.mode,
            "direction": view.direction, "record": view.record, "created_at": iso(view.created_at),
            "expires_at": iso(view.expires_at), "renew_on_use": view.renew_on_use, "live": view.live,
            "ended_at": iso(view.ended_at), "end_reason": view.end_reason}


def receipt_json(receipt: Receipt) -> dict:
    return {"call_id": receipt.call_id, "binding_id": receipt.binding_id, "ticket_number": receipt.ticket_number,
            "department": receipt.department, "virtual_number": receipt.virtual_number,
            "caller": receipt.caller_masked, "callee": receipt.callee_masked, "direction": receipt.direction,
            "outcome": receipt.outcome, "started_at": iso(receipt.started_at),
            "answered_at": iso(receipt.answered_at), "ended_at": iso(receipt.ended_at),
            "hangup_by": receipt.hangup_by, "seconds": receipt.seconds}


# --- the broker's refusals as API errors (their messages hold no citizen number) -----------------------

_BROKER_ERRORS = (
    (PoolExhausted, 409, "pool_exhausted"),
    (NumberInUse, 409, "number_in_use"),
    (UnknownTicket, 404, "ticket_not_found"),
    (BindingNotFound, 404, "binding_not_found"),
    (ReceiptNotFound, 404, "receipt_not_found"),
    (UnknownNumber, 404, "number_not_found"),
    (InvalidParty, 409, "cannot_bind"),
    (InvalidRequest, 400, "invalid_request"),
)


def api_error(exc: BrokerError) -> ApiError:
    """The API's answer to one of the broker's refusals."""
    for kind, status, code in _BROKER_ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(409, "virtual_numbers_refused", str(exc))


@bp.errorhandler(BrokerError)
def _broker_refused(exc: BrokerError):
    refused = api_error(exc)
    return error_response(refused.status, refused.error, refused.message)


# --- the pool ----------------------------------------------------------------------------------------

@bp.get("/api/virtual-numbers")
@require_roles(*STAFF)
def list_numbers():
    """The pool's numbers (``include_removed=true``: the removed ones too) and its figures."""
    flag = request.args.get("include_removed", "false")
    if flag not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", "include_removed: must be true or false")
    broker = _broker()
    figures = broker.figures()
    return jsonify({"items": [number_json(n) for n in broker.numbers(include_removed=flag == "true")],
                    "figures": {"active": figures.active, "reserved": figures.reserved, "in_use": figures.in_use,
                                "free": figures.free, "live_bindings": figures.live_bindings,
                                "extension_bindings": figures.extension_bindings}})


@bp.post("/api/virtual-numbers")
@require_roles(Role.admin)
def add_number():
    """Put a number in the pool (201), or back in service (201; 200 when it was active already)."""
    body = json_object()
    unknown = sorted(set(body) - {"number"})
    if unknown or not isinstance(body.get("number"), str):
        raise ApiError(400, "invalid_body", 'the body is {"number": "<E.164 or national number>"}')
    broker = _broker()
    before = {n.number: n.state for n in broker.numbers(include_removed=True)}
    try:
        view = broker.add_number(body["number"])
    except UnknownNumber as exc:
        raise ApiError(400, "invalid_number", str(exc)) from None
    response = jsonify(number_json(view))
    response.status_code = 200 if before.get(view.number) == "active" else 201
    return response


@bp.post("/api/virtual-numbers/<number>/reserve")
@require_roles(Role.admin)
def reserve_number(number: str):
    """Drain a number: no new binding on it, its live bindings go on."""
    return jsonify(number_json(_broker().reserve(number)))


@bp.delete("/api/virtual-numbers/<number>")
@require_roles(Role.admin)
def remove_number(number: str):
    """Take a number out of the pool; 409 while live bindings remain (reserve it first)."""
    return jsonify(number_json(_broker().remove(number)))


@bp.get("/api/virtual-numbers/receipts")
@require_roles(Role.admin, Role.supervisor, Role.department)
def list_receipts():
    """Call receipts, newest first: a department's token sees its own bindings' calls only."""
    ticket = request.args.get("ticket") or None
    if ticket is not None and not re.fullmatch(r"[0-9]{1,20}", ticket):
        raise ApiError(400, "invalid_parameter", "ticket: a ticket number is 1 to 20 digits")
    raw_limit = request.args.get("limit", "100")
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= 1000:
        raise ApiError(400, "invalid_parameter", "limit: must be a whole number from 1 to 1000")
    identity = _caller()
    department = identity.department if identity.role is Role.department else None
    receipts = _broker().receipts(department=department, ticket_number=ticket, limit=int(raw_limit))
    return jsonify({"items": [receipt_json(r) for r in receipts]})


# --- bindings ----------------------------------------------------------------------------------------

def live_binding(ticket_number: str, department: str) -> BindingView | None:
    """The department's live binding of the ticket, if it has one."""
    found = _broker().list_bindings(ticket_number=ticket_number, department=department, limit=1)
    return found[0] if found else None


def bind_ticket(ticket: TicketView, department: str, *, direction: str = "both",
                record: bool = False) -> tuple[BindingView, bool]:
    """The department's live binding of the ticket's citizen, made if it has none; (binding, made now?)."""
    if department not in (ticket.department, *ticket.supporting):
        raise ApiError(400, "invalid_body", "department: must be the ticket's lead or a supporting department")
    existing = live_binding(ticket.number, department)
    if existing is not None:
        return existing, False
    if not ticket.caller_e164:
        raise ApiError(409, "no_caller_number", "the ticket has no usable caller number (withheld or invalid): "
                                                "there is nobody to reach through a virtual number")
    return _broker().bind(ticket.number, ticket.caller_e164, department, direction=direction, record=record), True


@bp.post("/api/tickets/<number>/bindings")
@require_roles(*BINDERS)
def create_binding(number: str):
    """Bind the ticket's citizen to a department through a virtual number (201; 200: its live one)."""
    identity = _caller()
    ticket = visible_ticket(number, identity)
    body = json_object()
    unknown = sorted(set(body) - _BINDING_FIELDS)
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)[:200]}; "
                                            f"the fields are {', '.join(sorted(_BINDING_FIELDS))}")
    direction, record = body.get("direction", "both"), body.get("record", False)
    if direction not in DIRECTIONS:
        raise ApiError(400, "invalid_body", f"direction: must be one of {', '.join(DIRECTIONS)}")
    if not isinstance(record, bool):
        raise ApiError(400, "invalid_body", "record: must be true or false")
    if identity.role is Role.department:
        if body.get("department", identity.department) != identity.department:
            raise ApiError(403, "forbidden", "a department token binds for its own department only")
        department = identity.department
    else:
        department = body.get("department", ticket.department)
        if not isinstance(department, str) or not department:
            raise ApiError(400, "invalid_body", "department: name the department (the ticket has no lead yet)")
    view, made = bind_ticket(ticket, department, direction=direction, record=record)
    response = jsonify(binding_json(view))
    response.status_code = 201 if made else 200
    return response


@bp.get("/api/tickets/<number>/bindings")
@require_roles(*ALL_ROLES)
def list_ticket_bindings(number: str):
    """The ticket's bindings (``include_ended=true``: ended ones too); a department sees its own."""
    identity = _caller()
    visible_ticket(number, identity)
    flag = request.args.get("include_ended", "false")
    if flag not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", "include_ended: must be true or false")
    department = identity.department if identity.role is Role.department else None
    views = _broker().list_bindings(ticket_number=number, department=department, include_ended=flag == "true")
    return jsonify({"items": [binding_json(v) for v in views]})


def _visible_binding(binding_id: str) -> BindingView:
    """Binding ``binding_id`` if the token may act on it; another department's answers 404 like a missing one."""
    if not _ID.fullmatch(binding_id):
        raise ApiError(404, "binding_not_found", "no binding has that id")
    try:
        view = _broker().binding(int(binding_id))
    except BindingNotFound:
        raise ApiError(404, "binding_not_found", "no binding has that id") from None
    identity = _caller()
    if identity.role is Role.department and view.department != identity.department:
        raise ApiError(404, "binding_not_found", "no binding has that id")
    return view


@bp.delete("/api/bindings/<binding_id>")
@require_roles(*STAFF, Role.department)
def revoke_binding(binding_id: str):
    """End a binding now; its virtual number is free for others (again: nothing changes)."""
    view = _visible_binding(binding_id)
    return jsonify(binding_json(_broker().revoke(view.id)))


# --- Twilio: the REST client -------------------------------------------------------------------------

def twilio_configured() -> bool:
    settings = _services().settings
    return bool(settings.twilio_account_sid and settings.twilio_auth_token)


def _twilio() -> Client:
    """The app's Twilio REST client, built on first use (``app.config["TWILIO_HTTP_CLIENT"]``: the
    twilio HttpClient it sends through; default TwilioHttpClient with a 10 s timeout)."""
    client = current_app.extensions.get("web.twilio")
    if client is None:
        settings = _services().settings
        http_client = current_app.config.get("TWILIO_HTTP_CLIENT") or TwilioHttpClient(timeout=10)
        client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http_client)
        current_app.extensions["web.twilio"] = client
    return client


def _public_url(endpoint: str, **query: str) -> str:
    """The absolute URL Twilio must call for ``endpoint`` (twilio_webhook_base_url, else this request's host)."""
    base = _services().settings.twilio_webhook_base_url or request.host_url.rstrip("/")
    return base + url_for(endpoint) + (f"?{urlencode(query)}" if query else "")


def _twilio_failure(exc: Exception) -> str:
    # Twilio's error texts can quote the number dialled: keep only the kind, HTTP status and Twilio code.
    return f"{type(exc).__name__} (status {getattr(exc, 'status', '-')}, code {getattr(exc, 'code', '-')})"


def department_phone(view: BindingView, asked: str | None) -> str:
    """The department phone to ring: the binding's own number, else ``asked`` (one of the department's
    phones), else its first phone."""
    try:
        phones = _services().departments.get(view.department).phones
    except DepartmentNotFound:
        phones = ()
    if view.department_number:
        phones = (view.department_number,)
    if asked:
        settings = _services().settings
        e164 = normalise_caller(asked, settings.region, settings.local_area_code or None).e164
        if e164 not in phones:
            raise ApiError(400, "invalid_body", "from_phone: not a phone this binding's department may call from")
        return e164
    if not phones:
        raise ApiError(409, "no_department_phone", f"department {view.department} has no phone to ring")
    return phones[0]


def asterisk_configured() -> bool:
    return bool(_services().settings.ami_secret)


def can_place_calls() -> bool:
    """Whether "call the citizen" can ring phones: through Twilio, or through Asterisk (AMI Originate)."""
    return twilio_configured() or asterisk_configured()


def require_a_dialler() -> None:
    """501 when neither Twilio nor an AMI link is configured, saying what to do instead."""
    if not can_place_calls():
        raise ApiError(501, "not_configured", "placing calls needs Twilio (twilio_account_sid, twilio_auth_token) "
                                              "or Asterisk's AMI (ami_secret); without them, dial the virtual "
                                              "number from one of the department's phones")


def place_department_call(view: BindingView, phone: str) -> str:
    """Ring the department's ``phone`` first, then the citizen; both see only the virtual number. Twilio
    when configured, else Asterisk. Returns the call's id (Twilio's call SID, or the broker's call id)."""
    require_a_dialler()
    if not view.live:
        raise ApiError(409, "binding_ended", f"binding {view.id} has ended ({view.end_reason})")
    if not twilio_configured():
        return _originate_department_call(view, phone)
    query = {"extension": view.extension} if view.extension else {}
    try:
        call = _twilio().calls.create(to=phone, from_=view.virtual_number, method="POST",
                                      url=_public_url("virtual.voice_outbound", **query),
                                      status_callback=_public_url("virtual.call_status"),
                                      status_callback_event=["completed"], status_callback_method="POST")
    except Exception as exc:  # noqa: BLE001 - whatever Twilio or the network did, the caller gets a clear 502
        log.error("virtual numbers: Twilio refused the call of binding %d: %s", view.id, _twilio_failure(exc),
                  extra={"event": "virtual.call_failed"})
        raise ApiError(502, "call_failed", "Twilio did not place the call; try again shortly") from None
    log.info("virtual numbers: ringing department %s for binding %d (call %s)", view.department, view.id, call.sid,
             extra={"event": "virtual.call_placed"})
    return call.sid


def _originate_department_call(view: BindingView, phone: str) -> str:
    """Asterisk: the call is resolved first, as if the department's phone had dialled the virtual number
    (so the same rules, receipt and audit apply), then an AMI Originate rings that phone through
    [hotline-virtual-ring] and, once it answers, sends it on to [hotline-virtual-out] with the call id,
    whose leg alone learns the citizen's number. Nothing sent to Asterisk here carries it."""
    call_id = f"{int(datetime.now(timezone.utc).timestamp())}.{secrets.randbelow(10 ** 9)}"
    resolution = _broker().resolve(phone, view.virtual_number, view.extension, call_id)
    if resolution.refused:
        raise ApiError(409, "call_refused", f"the call was refused ({resolution.reason})")
    try:
        _services().queue_control.originate(
            f"vn-{call_id}", f"Local/{phone}@hotline-virtual-ring", context="hotline-virtual-out", exten=call_id,
            caller_id=resolution.caller_id, timeout_seconds=45,
            variables={"VIRTUAL_CALLERID": resolution.caller_id, "VIRTUAL_CALL": call_id, "VIRTUAL_ORIGINATED": "1"})
    except QueueControlUnavailable as exc:
        raise ApiError(503, "asterisk_unavailable", f"Asterisk cannot be reached to place the call: {exc}") from None
    except QueueControlError as exc:
        raise ApiError(502, "call_failed", f"Asterisk did not place the call: {exc}") from None
    log.info("virtual numbers: ringing department %s for binding %d through Asterisk (call %s)", view.department,
             view.id, call_id, extra={"event": "virtual.call_placed"})
    return call_id


@bp.post("/api/bindings/<binding_id>/call")
@require_roles(*STAFF, Role.department)
def call_citizen(binding_id: str):
    """Ring the department's phone, then the citizen; both see the virtual number only (202)."""
    view = _visible_binding(binding_id)
    body = json_object()
    unknown = sorted(set(body) - {"from_phone"})
    if unknown or not isinstance(body.get("from_phone", ""), str):
        raise ApiError(400, "invalid_body", 'the body is {"from_phone": "<one of the department\'s phones>"} or {}')
    require_a_dialler()
    phone = department_phone(view, body.get("from_phone") or None)
    sid = place_department_call(view, phone)
    response = jsonify({"call_id": sid, "binding_id": view.id, "virtual_number": view.virtual_number,
                        "department_phone": phone})
    response.status_code = 202
    return response


def desk_call(ticket: TicketView, department: str, from_phone: str | None = None) -> str:
    """The department page's button: bind if need be, then ring (Twilio or Asterisk). Returns the i18n key
    of what happened; refusals are ApiErrors."""
    try:
        view, _ = bind_ticket(ticket, department)
        if not can_place_calls():
            return "virtual.bound"
        place_department_call(view, department_phone(view, from_phone))
    except BrokerError as exc:
        raise api_error(exc) from None
    return "virtual.calling"


def desk_panel(ticket: TicketView, department: str) -> dict:
    """What the department page shows of the ticket's virtual number (never the citizen's number)."""
    try:
        phones = list(_services().departments.get(department).phones)
        return {"binding": live_binding(ticket.number, department), "can_call": can_place_calls(),
                "can_bind": bool(ticket.caller_e164), "phones": phones, "unavailable": False}
    except (StorageError, DepartmentNotFound) as exc:
        log.error("virtual numbers: the department page cannot read bindings: %s", type(exc).__name__)
        return {"unavailable": True}


# --- Twilio: the webhooks ----------------------------------------------------------------------------

def _signed() -> bool:
    token = _services().settings.twilio_auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        return False
    base = _services().settings.twilio_webhook_base_url
    url = base + request.full_path.rstrip("?") if base else request.url
    return RequestValidator(token).validate(url, request.form, signature)


def twilio_signed(view):
    """Run ``view`` only for a request Twilio signed; else 403, audited with the caller masked."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not _signed():
            _FORGED.inc()
            caller = mask(request.form.get("From") or "")
            log.warning("virtual numbers: refused a %s webhook without a valid Twilio signature (from %s)",
                        request.path, caller, extra={"event": "virtual.forged_webhook", "caller": caller,
                                                     "signed": "X-Twilio-Signature" in request.headers})
            raise ApiError(403, "forbidden", "this endpoint answers only requests signed by Twilio")
        return view(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=4)
def _menu_prompts(menu: str):
    try:
        return load_menu(menu).prompts
    except MenuError:
        return load_menu("default").prompts


def _say(twiml, prompt_id: str) -> None:
    """The prompt in Mandarin, then in English (the texts of the menu's dialplan prompts)."""
    texts = _menu_prompts(_services().settings.menu).get(prompt_id) or _menu_prompts("default")[prompt_id]
    for language, say_language in SAY_LANGUAGES:
        twiml.say(texts[language], language=say_language)


def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), status=200, mimetype="text/xml")


def _refusal(prompt_id: str = NOT_IN_SERVICE) -> Response:
    twiml = VoiceResponse()
    _say(twiml, prompt_id)
    twiml.hangup()
    return _twiml(twiml)


def _conference(twiml, resolution: Resolution) -> None:
    dial = twiml.dial(caller_id=resolution.caller_id)
    options = {"record": "record-from-start"} if resolution.record else {}
    dial.conference(resolution.call_id, start_conference_on_enter=True, end_conference_on_exit=True, beep=False,
                    **options)


def _connect_to_citizen(resolution: Resolution) -> Response:
    """The department's leg joins a conference; the citizen's leg is placed through the REST API."""
    citizen_leg = VoiceResponse()
    if resolution.record:
        _say(citizen_leg, CALL_RECORDED)
    _conference(citizen_leg, resolution)
    try:
        _twilio().calls.create(to=resolution.target, from_=resolution.caller_id, twiml=str(citizen_leg),
                               status_callback=_public_url("virtual.call_status", call=resolution.call_id),
                               status_callback_event=["answered", "completed"], status_callback_method="POST")
    except Exception as exc:  # noqa: BLE001 - any failure: say so, never a half-made connection
        log.error("virtual numbers: call %s: Twilio did not place the citizen's leg: %s", resolution.call_id,
                  _twilio_failure(exc), extra={"event": "virtual.call_failed"})
        _close_receipt(resolution.call_id)
        return _refusal(VIRTUAL_UNAVAILABLE)
    twiml = VoiceResponse()
    if resolution.record:
        _say(twiml, CALL_RECORDED)
    _conference(twiml, resolution)
    return _twiml(twiml)


def _connect_to_department(resolution: Resolution) -> Response:
    """The citizen called back: dial the department's phone, showing the virtual number."""
    twiml = VoiceResponse()
    if resolution.record:
        _say(twiml, CALL_RECORDED)
    options = {"record": "record-from-answer"} if resolution.record else {}
    dial = twiml.dial(caller_id=resolution.caller_id, **options)
    dial.number(resolution.target, status_callback=_public_url("virtual.call_status", call=resolution.call_id),
                status_callback_event="answered completed", status_callback_method="POST")
    return _twiml(twiml)


def _close_receipt(call_id: str) -> None:
    try:
        _broker().record_call(call_id, ended_at=datetime.now(timezone.utc), hangup_by="system")
    except Exception as exc:  # noqa: BLE001 - the receipt is best effort; the call is refused anyway
        log.error("virtual numbers: call %s: receipt not closed: %s", call_id, type(exc).__name__)


def _answer(caller: str | None, dialled: str | None, extension: str | None, *, outbound: bool = False) -> Response:
    call_id = request.form.get("CallSid", "")
    if not _CALL_ID.fullmatch(call_id) or not dialled:
        log.warning("virtual numbers: a Twilio webhook without a usable CallSid or To; not put through",
                    extra={"event": "virtual.bad_request"})
        return _refusal(VIRTUAL_UNAVAILABLE)
    try:
        resolution = _broker().resolve(caller, dialled, extension, call_id)
    except Exception as exc:  # noqa: BLE001 - storage or broker failure: an announcement, never a guess
        log.error("virtual numbers: call %s could not be resolved: %s", call_id, type(exc).__name__,
                  extra={"event": "virtual.resolution_failed"})
        return _refusal(VIRTUAL_UNAVAILABLE)
    if resolution.refused:
        if resolution.reason == EXTENSION_REQUIRED and extension is None and not outbound:
            twiml = VoiceResponse()
            action = url_for("virtual.voice_extension")
            gather = twiml.gather(num_digits=_broker().bindings.extension_digits, action=action, method="POST",
                                  finish_on_key="#", timeout=_EXTENSION_SECONDS)
            _say(gather, resolution.announcement or ENTER_EXTENSION)
            twiml.redirect(action, method="POST")  # nothing keyed: resolved again without an extension
            return _twiml(twiml)
        return _refusal(NOT_IN_SERVICE)
    if resolution.direction == TO_CITIZEN:
        return _connect_to_citizen(resolution)
    if outbound:  # we rang a department phone; the answer must lead to the citizen, nothing else
        _close_receipt(call_id)
        return _refusal(VIRTUAL_UNAVAILABLE)
    return _connect_to_department(resolution)


@bp.post("/twilio/voice")
@twilio_signed
def voice():
    """A call to a virtual number: resolved by (From, To), answered with TwiML."""
    return _answer(request.form.get("From"), request.form.get("To"), None)


@bp.post("/twilio/voice/extension")
@twilio_signed
def voice_extension():
    """The extension the caller keyed (``Digits``); nothing usable keyed is refused."""
    digits = request.form.get("Digits", "")
    return _answer(request.form.get("From"), request.form.get("To"), digits if _EXTENSION.fullmatch(digits) else "x")


@bp.post("/twilio/voice/outbound")
@twilio_signed
def voice_outbound():
    """A department phone answered the call "call the citizen" placed (From: the virtual number, To: the
    department's phone): resolved as if that phone had dialled the virtual number."""
    extension = request.args.get("extension")
    return _answer(request.form.get("To"), request.form.get("From"),
                   extension if _EXTENSION.fullmatch(extension or "") else None, outbound=True)


def _reported_at() -> datetime:
    raw = request.form.get("Timestamp")
    if raw:
        try:
            when = parsedate_to_datetime(raw)
            if when.tzinfo is not None:
                return when
        except (TypeError, ValueError):
            pass
    return datetime.now(timezone.utc)


@bp.post("/twilio/status")
@twilio_signed
def call_status():
    """Twilio's call status callbacks complete the call's receipt (answered, ended)."""
    call_id = request.args.get("call") or request.form.get("CallSid", "")
    state = request.form.get("CallStatus", "")
    if not _CALL_ID.fullmatch(call_id):
        return _twiml(VoiceResponse())
    at = _reported_at()
    answered = ended = None
    if state in ("in-progress", "answered"):
        answered = at
    elif state == "completed":
        ended = at
        duration = request.form.get("CallDuration", "")
        if duration.isdigit() and int(duration) > 0:
            answered = at - timedelta(seconds=int(duration))
    elif state in _FAILED_CALL_STATES:
        ended = at
    if answered is not None or ended is not None:
        try:
            _broker().record_call(call_id, answered_at=answered, ended_at=ended)
        except ReceiptNotFound:  # a leg that never reached resolution (the department did not answer)
            log.info("virtual numbers: status %s of call %s, which was never resolved", state, call_id)
    return _twiml(VoiceResponse())
