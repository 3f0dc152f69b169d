"""web/virtual.py: the pool, bindings and receipts over the API (scoped by role), "call the citizen", the
department page's button, and Twilio's webhooks for every outcome, signatures checked with the twilio
library's own algorithm. Twilio's REST API is a small HTTP server on a loopback port; the citizen's number
must reach it, and nothing else (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator

from base.db import make_engine, make_session_factory
from config import load_settings
from hotline.services import Services
from ivr.menu import load_menu
from orders.caller import mask
from orders.cases import Actor, MoveFields
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from tests.orders_fixtures import unreachable_database_url
from tests.test_web_support import assert_matches_spec, bearer
from queues.control import QueueControlError, QueueControlUnavailable
from virtual_numbers.broker import Broker
from web.app import create_app
from web.auth import create_token
from web.tokens import Role

SID = "AC" + "feedface" * 4  # no digit run that could pass for a number
TOKEN = "twilio-auth-token-for-tests"
BASE = "https://hotline.example.gov"
X1, X2, X3 = "+8675526660001", "+8675526660002", "+8675526660003"
W1, W2 = "+8675583330001", "+8675583330002"  # the water company's phones
P1 = "+8675583340001"  # police
R1 = "+8675583350001"  # roads
SECRET = "13912345678"  # a confidential citizen (national form)
CITIZEN = "+86" + SECRET
OTHER = "13700000001"
STRANGER = "+8613600000009"
T1, T2, T3, T4, T5 = (f"202612010000{i}" for i in range(1, 6))
AGENT = Actor("setup-agent", Role.agent)
T0 = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
PROMPTS = load_menu("default").prompts


def forms(e164: str) -> list[str]:
    """A citizen's number as it could leak: E.164, with 86, national, the last 8 digits, spaced 3-4-4."""
    national = e164[3:]
    return [e164, e164[1:], national, national[-8:], f"{national[:3]} {national[3:7]} {national[7:]}"]


# --- a fake Twilio REST API on a loopback port -----------------------------------------------------------

class FakeTwilio:
    """Answers POST .../Calls.json like Twilio (201 and a call resource), or fails when told to."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(body).items()}
                fake.calls.append({"path": self.path, "form": form})
                if fake.fail:
                    status, payload = 400, {"code": 21211, "status": 400, "more_info": "",
                                            "message": f"The 'To' number {form.get('To')} is not a valid phone number."}
                else:
                    status, payload = 201, {"sid": "CA" + uuid.uuid4().hex, "status": "queued", "to": form.get("To"),
                                            "from": form.get("From")}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending to the fake API instead of api.twilio.com."""

    def __init__(self, base: str) -> None:
        super().__init__(timeout=5)
        self.base = base

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        return super().request(method, self.base + parts.path + (f"?{parts.query}" if parts.query else ""),
                               *args, **kwargs)


@pytest.fixture
def fake_api():
    api = FakeTwilio()
    yield api
    api.close()


# --- the world ---------------------------------------------------------------------------------------------

@dataclass
class World:
    app: object
    services: Services
    client: object
    tokens: dict
    answers: list = field(default_factory=list)  # (path, status, body) of every HTTP answer

    def api(self, method: str, path: str, who: str, **kwargs):
        return self.client.open(path, method=method, headers=bearer(self.tokens[who]), **kwargs)

    @property
    def broker(self) -> Broker:
        return self.services.broker


def ticket(services, number: str, caller: str | None, lead: str = "water", supporting=("police",),
           confidential: bool = True) -> str:
    """A ticket registered and dispatched by an agent (caller None: a withheld number)."""
    values = dict(number=number, revision=1, caller_raw=caller or "anonymous",
                  caller_e164=None if caller is None else "+86" + caller,
                  caller_kind="withheld" if caller is None else "mobile", created_at=T0, status="queued",
                  ivr_path="language:1>main:2", confidential=confidential)
    assert TicketStore(services.session_factory).save(TicketSnapshot(**values))
    version = services.tickets.get(number).version
    version = services.casework.apply(number, "register", AGENT, version,
                                      MoveFields(category="water-outage", summary="No water since morning",
                                                 address="1 Binhai Road", district="longhua"))
    services.casework.apply(number, "dispatch", AGENT, version, MoveFields(lead=lead, supporting=tuple(supporting)))
    return number


@pytest.fixture
def make_world(tmp_path, database_url, engine, session_factory, redis_conn, redis_prefix, fake_api):
    def make(twilio: bool = True, base: str = BASE, tickets: bool = True, asterisk=None, **broker_options) -> World:
        overrides = {}
        if twilio:
            overrides = dict(twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_webhook_base_url=base)
        if asterisk is not None:
            overrides["ami_secret"] = "ami-secret"
        settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, **overrides)
        services = Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
        services.broker = Broker(session_factory, redis_conn, key_prefix=redis_prefix, region=settings.region,
                                 local_area_code=settings.local_area_code, **broker_options)
        if asterisk is not None:
            services.queue_control = asterisk
        app = create_app(services, token_cache_ttl=0)
        app.config["TWILIO_HTTP_CLIENT"] = LoopbackHttpClient(fake_api.url)
        made = {role: create_token(session_factory, f"t-{role}", role) for role in ("admin", "supervisor", "agent")}
        departments = services.departments
        for code, phones in (("water", (W1, W2)), ("police", (P1,)), ("roads", (R1,))):
            departments.create(code, code, code)
            for phone in phones:
                departments.add_phone(code, phone)
            made[code] = create_token(session_factory, f"t-{code}", "department", code)
        departments.put_rule("water-outage", "water", supporting=("police",), kind="help", answer_days=5)
        world = World(app, services, app.test_client(), made)

        @app.after_request
        def keep(response):
            world.answers.append((world_path(), response.status_code, response.get_data(as_text=True)))
            return response

        if tickets:
            ticket(services, T1, SECRET)
            ticket(services, T2, OTHER, lead="roads", supporting=())
            ticket(services, T3, None)
        return world

    return make


def world_path() -> str:
    from flask import request

    return request.full_path


@pytest.fixture
def w(make_world) -> World:
    return make_world()


# --- Twilio requests ------------------------------------------------------------------------------------

def twilio_post(world: World, path: str, form: dict, *, signature: str | None = None, url: str | None = None):
    """POST ``form`` to ``path`` as Twilio would, signed with RequestValidator's own algorithm."""
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(url or BASE + path, form)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return world.client.post(path, data=form, headers=headers)


def call(world: World, caller: str, dialled: str, call_id: str | None = None, path: str = "/twilio/voice", **more):
    return twilio_post(world, path, {"CallSid": call_id or "CA" + uuid.uuid4().hex, "From": caller, "To": dialled,
                                     **more})


def twiml(response) -> ET.Element:
    assert response.status_code == 200 and response.mimetype == "text/xml", response.get_data(as_text=True)
    return ET.fromstring(response.get_data())


def says(root: ET.Element, prompt: str) -> bool:
    spoken = [(s.get("language"), s.text) for s in root.iter("Say")]
    return [("zh-CN", PROMPTS[prompt]["zh-CN"]), ("en-US", PROMPTS[prompt]["en"])] == [
        item for item in spoken if item[1] in (PROMPTS[prompt]["zh-CN"], PROMPTS[prompt]["en"])]


def refused(response, prompt: str = "not-in-service") -> None:
    root = twiml(response)
    assert says(root, prompt), ET.tostring(root)
    assert root.find("Hangup") is not None and root.find("Dial") is None and root.find("Gather") is None


def bind(world: World, number: str = T1, who: str = "water", **body) -> dict:
    response = world.api("POST", f"/api/tickets/{number}/bindings", who, json=body)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


# --- the pool -------------------------------------------------------------------------------------------

def test_the_pool_is_added_reserved_removed_and_counted(w):
    added = w.api("POST", "/api/virtual-numbers", "admin", json={"number": "075526660001"})
    assert added.status_code == 201 and added.get_json()["number"] == X1
    assert_matches_spec(added, "/api/virtual-numbers", "post")
    assert w.api("POST", "/api/virtual-numbers", "admin", json={"number": X1}).status_code == 200
    assert w.api("POST", "/api/virtual-numbers", "admin", json={"number": X2}).status_code == 201
    bad = w.api("POST", "/api/virtual-numbers", "admin", json={"number": "not a number"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_number"
    assert w.api("POST", "/api/virtual-numbers", "admin", json={"numbers": [X1]}).status_code == 400
    for who in ("supervisor", "agent", "water"):
        assert w.api("POST", "/api/virtual-numbers", who, json={"number": X3}).status_code == 403
    assert w.client.post("/api/virtual-numbers", json={"number": X3}).status_code == 401

    xb = bind(w)["virtual_number"]  # one of the two
    pool = w.api("GET", "/api/virtual-numbers", "agent")
    assert_matches_spec(pool, "/api/virtual-numbers")
    assert {n["number"]: n["live_bindings"] for n in pool.get_json()["items"]} == {xb: 1, ({X1, X2} - {xb}).pop(): 0}
    assert pool.get_json()["figures"] == {"active": 2, "reserved": 0, "in_use": 1, "free": 1, "live_bindings": 1,
                                          "extension_bindings": 0}
    assert w.api("GET", "/api/virtual-numbers", "water").status_code == 403

    assert w.api("POST", f"/api/virtual-numbers/{xb}/reserve", "agent").status_code == 403
    reserved = w.api("POST", f"/api/virtual-numbers/{xb}/reserve", "admin")
    assert reserved.status_code == 200 and reserved.get_json()["state"] == "reserved"
    busy = w.api("DELETE", f"/api/virtual-numbers/{xb}", "admin")
    assert busy.status_code == 409 and busy.get_json()["error"] == "number_in_use"
    assert "1 live binding" in busy.get_json()["message"] and "reserve" in busy.get_json()["message"]
    assert_matches_spec(busy, "/api/virtual-numbers/{number}", "delete")
    w.broker.end_for_ticket(T1)
    removed = w.api("DELETE", f"/api/virtual-numbers/{xb}", "admin")
    assert removed.status_code == 200 and removed.get_json()["state"] == "removed"
    assert w.api("POST", "/api/virtual-numbers/+8675526669999/reserve", "admin").status_code == 404
    listed = w.api("GET", "/api/virtual-numbers?include_removed=true", "supervisor").get_json()["items"]
    assert {n["number"]: n["state"] for n in listed} == {xb: "removed", ({X1, X2} - {xb}).pop(): "active"}
    assert w.api("GET", "/api/virtual-numbers?include_removed=yes", "admin").status_code == 400


# --- bindings -------------------------------------------------------------------------------------------

def test_a_department_binds_its_tickets_citizen_and_sees_the_number_masked(w):
    w.broker.add_number(X1)
    w.broker.add_number(X2)
    made = w.api("POST", f"/api/tickets/{T1}/bindings", "water", json={"record": True})
    assert made.status_code == 201
    assert_matches_spec(made, "/api/tickets/{number}/bindings", "post")
    body = made.get_json()
    assert (body["ticket_number"], body["department"], body["citizen"], body["record"], body["live"]) == (
        T1, "water", mask(CITIZEN), True, True)
    assert body["virtual_number"] in (X1, X2) and body["mode"] == "pair" and body["extension"] is None
    again = w.api("POST", f"/api/tickets/{T1}/bindings", "water", json={})
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]  # its live binding, not a second one
    police = bind(w, who="police", direction="to_citizen")  # the supporting department gets its own
    assert police["department"] == "police" and police["direction"] == "to_citizen" and police["id"] != body["id"]

    listed = w.api("GET", f"/api/tickets/{T1}/bindings", "water")
    assert_matches_spec(listed, "/api/tickets/{number}/bindings")
    assert [b["department"] for b in listed.get_json()["items"]] == ["water"]
    assert {b["department"] for b in w.api("GET", f"/api/tickets/{T1}/bindings", "agent").get_json()["items"]} == {
        "water", "police"}
    for text in (made.get_data(as_text=True), listed.get_data(as_text=True)):
        assert not any(form in text for form in forms(CITIZEN))


def test_another_departments_ticket_is_a_404_whatever_is_asked(w):
    w.broker.add_number(X1)
    for method, body in (("POST", {}), ("GET", None)):
        response = w.api(method, f"/api/tickets/{T1}/bindings", "roads", json=body)
        assert response.status_code == 404 and response.get_json()["error"] == "ticket_not_found"
    assert w.api("POST", "/api/tickets/2026129999999/bindings", "water", json={}).status_code == 404
    assert w.api("POST", "/api/tickets/abc/bindings", "water", json={}).status_code == 400
    assert w.broker.list_bindings(ticket_number=T1) == []


def test_who_binds_for_which_department(w):
    w.broker.add_number(X1)
    w.broker.add_number(X2)  # one citizen, two departments: two numbers
    assert w.api("POST", f"/api/tickets/{T1}/bindings", "admin", json={}).status_code == 403
    other = w.api("POST", f"/api/tickets/{T1}/bindings", "water", json={"department": "police"})
    assert other.status_code == 403
    assert bind(w, who="agent")["department"] == "water"  # staff: the lead by default
    assert bind(w, who="supervisor", department="police")["department"] == "police"
    unrelated = w.api("POST", f"/api/tickets/{T1}/bindings", "agent", json={"department": "roads"})
    assert unrelated.status_code == 400 and "lead or a supporting" in unrelated.get_json()["message"]
    for body, word in (({"direction": "sideways"}, "direction"), ({"record": "yes"}, "record"),
                       ({"expires": 3}, "unknown field")):
        refused_ = w.api("POST", f"/api/tickets/{T1}/bindings", "water", json=body)
        assert refused_.status_code == 400 and word in refused_.get_json()["message"]


def test_a_ticket_without_a_caller_number_cannot_be_bound(w):
    w.broker.add_number(X1)
    response = w.api("POST", f"/api/tickets/{T3}/bindings", "water", json={})
    assert response.status_code == 409 and response.get_json()["error"] == "no_caller_number"
    assert "no usable caller number" in response.get_json()["message"]


def test_an_exhausted_pool_is_a_409_that_says_why(make_world):
    w = make_world(extension_mode=False)
    ticket(w.services, T4, OTHER)
    w.broker.add_number(X1)
    bind(w)
    response = w.api("POST", f"/api/tickets/{T4}/bindings", "water", json={})
    assert response.status_code == 409 and response.get_json()["error"] == "pool_exhausted"
    assert_matches_spec(response, "/api/tickets/{number}/bindings", "post")
    message = response.get_json()["message"]
    assert "no virtual number can carry" in message and "extension mode is off" in message
    assert "13700000001" not in message and OTHER[-8:] not in message


def test_revoking_a_binding(w):
    w.broker.add_number(X1)
    w.broker.add_number(X2)
    water, police = bind(w), bind(w, who="police")
    assert w.api("DELETE", f"/api/bindings/{water['id']}", "roads").status_code == 404
    assert w.api("DELETE", f"/api/bindings/{water['id']}", "police").status_code == 404
    assert w.api("DELETE", "/api/bindings/abc", "agent").status_code == 404
    assert w.api("DELETE", "/api/bindings/99999", "agent").status_code == 404
    ended = w.api("DELETE", f"/api/bindings/{water['id']}", "water")
    assert_matches_spec(ended, "/api/bindings/{binding_id}", "delete")
    assert ended.status_code == 200 and not ended.get_json()["live"] and ended.get_json()["end_reason"] == "revoked"
    assert w.api("DELETE", f"/api/bindings/{police['id']}", "agent").get_json()["live"] is False
    assert w.api("GET", f"/api/tickets/{T1}/bindings", "agent").get_json()["items"] == []
    assert len(w.api("GET", f"/api/tickets/{T1}/bindings?include_ended=true", "agent").get_json()["items"]) == 2


def test_receipts_are_scoped(w):
    w.broker.add_number(X1)
    w.broker.add_number(X2)
    x = bind(w)["virtual_number"]
    bind(w, who="police")
    call(w, W1, x, "CAwater1")  # water calls the citizen
    call(w, STRANGER, x, "CAstranger")  # refused, no binding: a supervisor's to see only
    everything = w.api("GET", "/api/virtual-numbers/receipts", "supervisor")
    assert_matches_spec(everything, "/api/virtual-numbers/receipts")
    assert {r["call_id"] for r in everything.get_json()["items"]} == {"CAwater1", "CAstranger"}
    assert {r["call_id"] for r in w.api("GET", "/api/virtual-numbers/receipts", "admin").get_json()["items"]} == {
        "CAwater1", "CAstranger"}
    water = w.api("GET", f"/api/virtual-numbers/receipts?ticket={T1}", "water").get_json()["items"]
    assert [(r["call_id"], r["department"], r["outcome"], r["direction"]) for r in water] == [
        ("CAwater1", "water", "connected", "to_citizen")]
    assert water[0]["callee"] == mask(CITIZEN) and water[0]["caller"] == mask(W1)
    assert w.api("GET", "/api/virtual-numbers/receipts", "police").get_json()["items"] == []
    assert w.api("GET", "/api/virtual-numbers/receipts", "agent").status_code == 403
    assert w.api("GET", "/api/virtual-numbers/receipts?ticket=x1", "water").status_code == 400
    assert w.api("GET", "/api/virtual-numbers/receipts?limit=0", "water").status_code == 400


# --- the Twilio webhook: every outcome ----------------------------------------------------------------------

def test_a_department_reaches_the_citizen_through_a_conference_and_the_rest_api(w, fake_api):
    w.broker.add_number(X1)
    bind(w)
    response = call(w, W1, X1, "CAdept1")
    root = twiml(response)
    dial = root.find("Dial")
    assert dial.get("callerId") == X1 and dial.find("Conference").text == "CAdept1"
    assert dial.find("Number") is None and dial.find("Conference").get("endConferenceOnExit") == "true"
    assert not any(form in response.get_data(as_text=True) for form in forms(CITIZEN))
    [placed] = fake_api.calls
    assert placed["path"] == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert (placed["form"]["To"], placed["form"]["From"]) == (CITIZEN, X1)
    leg = ET.fromstring(placed["form"]["Twiml"])
    assert leg.find("Dial/Conference").text == "CAdept1"
    assert placed["form"]["StatusCallback"] == f"{BASE}/twilio/status?call=CAdept1"
    assert w.broker.receipts()[0].outcome == "connected"


def test_the_citizen_calls_back_and_reaches_the_department_that_called(w, fake_api):
    w.broker.add_number(X1)
    bind(w)
    call(w, W2, X1, "CAfirst")  # W2 called the citizen first
    root = twiml(call(w, CITIZEN, X1, "CAback"))
    dial = root.find("Dial")
    assert dial.get("callerId") == X1 and dial.find("Number").text == W2 and dial.get("record") is None
    assert dial.find("Number").get("statusCallback") == f"{BASE}/twilio/status?call=CAback"
    assert len(fake_api.calls) == 1  # only the first call placed a leg through the API


def test_a_recorded_binding_says_so_and_records(w, fake_api):
    w.broker.add_number(X1)
    bind(w, record=True)
    root = twiml(call(w, W1, X1, "CArec1"))
    assert says(root, "call-recorded")
    assert root.find("Dial/Conference").get("record") == "record-from-start"
    leg = ET.fromstring(fake_api.calls[0]["form"]["Twiml"])
    assert says(leg, "call-recorded") and leg.find("Dial/Conference").get("record") == "record-from-start"
    back = twiml(call(w, CITIZEN, X1, "CArec2"))
    assert says(back, "call-recorded") and back.find("Dial").get("record") == "record-from-answer"


@pytest.mark.parametrize("caller, dialled, reason", [
    (STRANGER, X1, "unknown_pair"),  # never put through on the dialled number alone
    ("anonymous", X1, "unknown_caller"),
    ("", X1, "unknown_caller"),
    (CITIZEN, X2, "unknown_number"),
])
def test_refusals_are_spoken_and_hung_up(w, fake_api, caller, dialled, reason):
    w.broker.add_number(X1)
    bind(w)
    refused(call(w, caller, dialled, "CArefused"))
    assert fake_api.calls == []
    assert w.broker.receipts()[0].outcome == reason


def test_a_direction_not_allowed_and_an_ended_binding_are_refused(w, fake_api):
    w.broker.add_number(X1)
    binding = bind(w, direction="to_citizen")
    refused(call(w, CITIZEN, X1, "CAdir"))
    w.api("DELETE", f"/api/bindings/{binding['id']}", "water")
    refused(call(w, W1, X1, "CArevoked"))
    assert [r.outcome for r in w.broker.receipts()] == ["revoked", "direction_not_allowed"]
    assert fake_api.calls == []


def test_extension_mode_gathers_the_extension_then_connects(make_world, fake_api):
    w = make_world()
    ticket(w.services, T4, OTHER)
    ticket(w.services, T5, "13500000005")
    w.broker.add_number(X1)
    first, second, third = bind(w), bind(w, T4), bind(w, T5)
    assert (first["mode"], second["mode"], third["mode"]) == ("pair", "extension", "extension")
    w.api("DELETE", f"/api/bindings/{first['id']}", "water")
    root = twiml(call(w, W1, X1, "CAext1"))
    gather = root.find("Gather")
    assert gather.get("action") == "/twilio/voice/extension" and gather.get("numDigits") == "4"
    assert says(gather, "enter-extension") and root.find("Redirect").text == "/twilio/voice/extension"
    assert root.find("Dial") is None and fake_api.calls == []
    connected = twiml(call(w, W1, X1, "CAext1", path="/twilio/voice/extension", Digits=second["extension"]))
    assert connected.find("Dial/Conference").text == "CAext1"
    assert fake_api.calls[0]["form"]["To"] == "+86" + OTHER
    refused(call(w, W1, X1, "CAext2", path="/twilio/voice/extension", Digits="9999"))
    refused(call(w, W1, X1, "CAext3", path="/twilio/voice/extension"))  # nothing keyed: the Redirect
    outcomes = {r.call_id: r.outcome for r in w.broker.receipts()}
    assert outcomes == {"CAext1": "connected", "CAext2": "unknown_extension", "CAext3": "unknown_extension"}


def test_a_backend_failure_says_so_and_never_dials(make_world, tmp_path, database_url, fake_api, caplog):
    w = make_world()
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        w.services.broker = Broker(make_session_factory(engine), None)
        caplog.set_level(logging.ERROR)
        refused(call(w, W1, X1, "CAbroken"), "virtual-unavailable")
    finally:
        engine.dispose()
    assert fake_api.calls == []
    assert any(getattr(r, "event", None) == "virtual.resolution_failed" for r in caplog.records)


def test_a_rest_api_failure_says_so_and_closes_the_receipt(w, fake_api, caplog):
    w.broker.add_number(X1)
    bind(w)
    fake_api.fail = True  # Twilio's real error text quotes the number dialled
    caplog.set_level(logging.DEBUG)
    response = call(w, W1, X1, "CAfail")
    refused(response, "virtual-unavailable")
    receipt = w.broker.receipts()[0]
    assert (receipt.outcome, receipt.hangup_by) == ("connected", "system") and receipt.ended_at is not None
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "virtual.call_failed" in logged and "21211" in logged
    assert not any(form in logged or form in response.get_data(as_text=True) for form in forms(CITIZEN))


def test_status_callbacks_complete_the_receipt(w):
    w.broker.add_number(X1)
    bind(w)
    call(w, W1, X1, "CAstat")
    answered = twilio_post(w, "/twilio/status?call=CAstat", {"CallSid": "CAcitizenleg", "CallStatus": "in-progress",
                                                              "Timestamp": "Tue, 01 Dec 2026 02:00:00 +0000"})
    assert answered.status_code == 200 and twiml(answered).tag == "Response"
    twilio_post(w, "/twilio/status?call=CAstat", {"CallSid": "CAcitizenleg", "CallStatus": "completed",
                                                  "CallDuration": "42", "Timestamp": "Tue, 01 Dec 2026 02:00:42 +0000"})
    receipt = w.broker.receipts()[0]
    assert receipt.seconds == 42 and receipt.ended_at == datetime(2026, 12, 1, 2, 0, 42, tzinfo=timezone.utc)
    assert twilio_post(w, "/twilio/status", {"CallSid": "CAnever", "CallStatus": "no-answer"}).status_code == 200


# --- signatures -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["missing", "forged", "tampered", "other_url"])
def test_an_unsigned_or_forged_webhook_is_refused_and_audited(w, fake_api, caplog, how):
    w.broker.add_number(X1)
    bind(w)
    caplog.set_level(logging.INFO)
    form = {"CallSid": "CAforged", "From": CITIZEN, "To": X1}
    signature = {"missing": "", "forged": "bm90IGEgc2lnbmF0dXJl",
                 "tampered": RequestValidator(TOKEN).compute_signature(BASE + "/twilio/voice", {**form, "To": X2}),
                 "other_url": RequestValidator(TOKEN).compute_signature(BASE + "/twilio/status", form)}[how]
    response = twilio_post(w, "/twilio/voice", form, signature=signature)
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    [audit] = [r for r in caplog.records if getattr(r, "event", None) == "virtual.forged_webhook"]
    assert audit.caller == mask(CITIZEN) and audit.levelno == logging.WARNING
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert not any(form_ in logged for form_ in forms(CITIZEN))
    assert w.broker.receipts() == [] and fake_api.calls == []  # nothing was resolved


@pytest.mark.parametrize("path", ["/twilio/voice/extension", "/twilio/voice/outbound", "/twilio/status"])
def test_every_twilio_endpoint_checks_the_signature(w, path):
    assert twilio_post(w, path, {"CallSid": "CAx", "From": W1, "To": X1}, signature="").status_code == 403


def test_without_a_base_url_the_request_url_is_signed(make_world):
    w = make_world(base="")
    w.broker.add_number(X1)
    form = {"CallSid": "CAlocal", "From": STRANGER, "To": X1}
    assert twilio_post(w, "/twilio/voice", form).status_code == 403  # signed for the public URL: not this one
    refused(twilio_post(w, "/twilio/voice", form, url="http://localhost/twilio/voice"))


def test_without_twilio_settings_every_webhook_is_refused(make_world):
    w = make_world(twilio=False)
    assert twilio_post(w, "/twilio/voice", {"CallSid": "CA1", "From": W1, "To": X1}).status_code == 403


# --- "call the citizen" ---------------------------------------------------------------------------------------

def test_call_the_citizen_rings_the_department_first_then_the_citizen(w, fake_api):
    w.broker.add_number(X1)
    binding = bind(w)
    placed = w.api("POST", f"/api/bindings/{binding['id']}/call", "water", json={"from_phone": "0755-83330002"})
    assert placed.status_code == 202
    assert_matches_spec(placed, "/api/bindings/{binding_id}/call", "post")
    body = placed.get_json()
    assert (body["virtual_number"], body["department_phone"]) == (X1, W2)
    [ring] = fake_api.calls
    assert (ring["form"]["To"], ring["form"]["From"]) == (W2, X1)
    assert ring["form"]["Url"] == f"{BASE}/twilio/voice/outbound"
    assert ring["form"]["StatusCallback"] == f"{BASE}/twilio/status"
    # W2 answers: Twilio asks the outbound webhook, which rings the citizen into W2's conference.
    root = twiml(call(w, X1, W2, body["call_id"], path="/twilio/voice/outbound"))
    assert root.find("Dial/Conference").text == body["call_id"]
    citizen_leg = fake_api.calls[1]["form"]
    assert (citizen_leg["To"], citizen_leg["From"]) == (CITIZEN, X1)
    assert ET.fromstring(citizen_leg["Twiml"]).find("Dial/Conference").text == body["call_id"]
    assert w.broker.receipts(department="water")[0].direction == "to_citizen"


def test_call_the_citizen_refusals(make_world, w, fake_api):
    w.broker.add_number(X1)
    binding = bind(w)
    path = f"/api/bindings/{binding['id']}/call"
    assert w.api("POST", path, "police", json={}).status_code == 404
    wrong = w.api("POST", path, "water", json={"from_phone": P1})
    assert wrong.status_code == 400 and "from_phone" in wrong.get_json()["message"]
    assert w.api("POST", path, "water", json={"to": CITIZEN}).status_code == 400
    assert w.api("POST", path, "agent", json={}).status_code == 202  # staff may place it, from water's phone
    assert fake_api.calls[-1]["form"]["To"] == W1
    fake_api.fail = True
    failed = w.api("POST", path, "water", json={})
    assert failed.status_code == 502 and failed.get_json()["error"] == "call_failed"
    w.api("DELETE", f"/api/bindings/{binding['id']}", "water")
    assert w.api("POST", path, "water", json={}).status_code == 409


def test_call_the_citizen_without_twilio_is_a_501_that_says_why(make_world):
    w = make_world(twilio=False)
    w.broker.add_number(X1)
    binding = bind(w)
    response = w.api("POST", f"/api/bindings/{binding['id']}/call", "water", json={})
    assert response.status_code == 501 and response.get_json()["error"] == "not_configured"
    assert "Twilio" in response.get_json()["message"] and "AMI" in response.get_json()["message"]
    assert_matches_spec(response, "/api/bindings/{binding_id}/call", "post")


class Dialler:
    """Records the Originates asked of Asterisk (the AMI side is tested in tests/test_ami_*.py)."""

    def __init__(self, error=None):
        self.calls, self.error = [], error

    def originate(self, originate_id, channel, **kw):
        if self.error:
            raise self.error
        self.calls.append({"originate_id": originate_id, "channel": channel, **kw})


def test_call_the_citizen_through_asterisk_rings_the_department_first_and_sends_asterisk_no_real_number(make_world):
    dialler = Dialler()
    w = make_world(twilio=False, asterisk=dialler)
    w.broker.add_number(X1)
    binding = bind(w)
    response = w.api("POST", f"/api/bindings/{binding['id']}/call", "water", json={"from_phone": W2})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert_matches_spec(response, "/api/bindings/{binding_id}/call", "post")
    [placed] = dialler.calls
    call_id = response.get_json()["call_id"]
    assert placed["channel"] == f"Local/{W2}@hotline-virtual-ring"  # the department's phone rings first
    assert (placed["context"], placed["exten"]) == ("hotline-virtual-out", call_id)
    assert placed["caller_id"] == X1 and placed["variables"]["VIRTUAL_CALLERID"] == X1
    sent = json.dumps(placed)
    assert not any(form in sent for form in forms(CITIZEN))
    # Only the outgoing leg ([hotline-virtual-out], agi ...?leg=out) learns whom to dial, as for any call.
    assert w.services.broker.dial_target(call_id) == CITIZEN


@pytest.mark.parametrize("error, status", [(QueueControlUnavailable("AMI link down"), 503),
                                           (QueueControlError("Extension does not exist."), 502)])
def test_call_the_citizen_when_asterisk_cannot_place_it_says_so(make_world, error, status):
    w = make_world(twilio=False, asterisk=Dialler(error))
    w.broker.add_number(X1)
    binding = bind(w)
    response = w.api("POST", f"/api/bindings/{binding['id']}/call", "water", json={})
    assert response.status_code == status


def test_an_outbound_answer_that_resolves_elsewhere_dials_nothing(w, fake_api):
    w.broker.add_number(X1)
    bind(w)
    refused(call(w, X1, STRANGER, "CAodd", path="/twilio/voice/outbound"))
    refused(call(w, X1, CITIZEN, "CAodd2", path="/twilio/voice/outbound"), "virtual-unavailable")
    assert fake_api.calls == []


# --- the department's page ---------------------------------------------------------------------------------

def login(world: World, who: str) -> None:
    page = world.client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    assert world.client.post("/login", data={"csrf": csrf, "token": world.tokens[who]}).status_code == 302


def csrf(world: World) -> str:
    with world.client.session_transaction() as session:
        return session["csrf"]


def test_the_department_page_binds_and_calls(w, fake_api):
    w.broker.add_number(X1)
    login(w, "water")
    page = w.client.get(f"/desk/inbox/{T1}?lang=en").get_data(as_text=True)
    assert 'id="virtual-call"' in page and "Call the citizen" in page and X1 not in page
    done = w.client.post(f"/desk/inbox/{T1}/virtual-call", data={"csrf": csrf(w), "from_phone": W2})
    assert done.status_code == 302
    page = w.client.get(done.headers["Location"]).get_data(as_text=True)
    assert X1 in page and "Your phone is ringing" in page
    assert [c["form"]["To"] for c in fake_api.calls] == [W2]
    assert len(w.broker.list_bindings(ticket_number=T1, department="water")) == 1
    w.client.post(f"/desk/inbox/{T1}/virtual-call", data={"csrf": csrf(w)})
    assert len(w.broker.list_bindings(ticket_number=T1, department="water")) == 1  # the live one, again
    assert w.client.post(f"/desk/inbox/{T2}/virtual-call", data={"csrf": csrf(w)}).status_code == 404
    assert w.client.post(f"/desk/inbox/{T1}/virtual-call", data={}).status_code == 400  # no CSRF token
    for text in (page, *(body for _, _, body in w.answers)):
        assert not any(form in text for form in forms(CITIZEN))


def test_without_twilio_the_page_gives_the_number_to_dial(make_world, fake_api):
    w = make_world(twilio=False)
    w.broker.add_number(X1)
    login(w, "water")
    page = w.client.get(f"/desk/inbox/{T1}").get_data(as_text=True)
    assert "获取虚拟号码" in page
    done = w.client.post(f"/desk/inbox/{T1}/virtual-call", data={"csrf": csrf(w)})
    page = w.client.get(done.headers["Location"]).get_data(as_text=True)
    assert X1 in page and "虚拟号码已就绪" in page and 'id="virtual-call"' not in page
    assert fake_api.calls == []


def test_the_page_explains_refusals(make_world):
    w = make_world(extension_mode=False)
    login(w, "water")
    page = w.client.get(f"/desk/inbox/{T3}?lang=en").get_data(as_text=True)
    assert "no usable caller number" in page and 'id="virtual-call"' not in page
    exhausted = w.client.post(f"/desk/inbox/{T1}/virtual-call", data={"csrf": csrf(w)})  # an empty pool
    assert exhausted.status_code == 409
    assert "No virtual number is free" in exhausted.get_data(as_text=True)  # in English, as the cookie says
    assert "no virtual number can carry" in exhausted.get_data(as_text=True)  # the broker's why, below


# --- the privacy sweep --------------------------------------------------------------------------------------

def test_privacy_sweep_no_department_facing_output_holds_a_citizens_number(make_world, fake_api, caplog):
    """30 confidential citizens; each department binds, calls through the API, the page and by dialling X,
    citizens call back; every answer, page, TwiML and log line is searched for every form of each number."""
    caplog.set_level(logging.DEBUG)
    w = make_world(tickets=False)
    for x in (X1, X2, X3):
        w.broker.add_number(x)
    rng = random.Random(12345)
    citizens = {}
    while len(citizens) < 30:
        national = rng.choice(["139", "138", "150", "186"]) + "".join(rng.choice("123456789") for _ in range(8))
        if national not in citizens.values():
            citizens[f"20261202{len(citizens) + 1:05d}"] = national
    for number, national in citizens.items():
        ticket(w.services, number, national, lead=rng.choice(["water", "police"]),
               supporting=("roads",))
    login(w, "water")
    for i, (number, national) in enumerate(citizens.items()):
        lead = w.services.tickets.get(number).department
        phone = {"water": W1, "police": P1}[lead]
        for who in (lead, "roads"):
            w.api("GET", f"/api/tickets/{number}", who)
            w.api("GET", f"/api/tickets/{number}/events", who)
        if lead == "water" and i % 2:
            w.client.post(f"/desk/inbox/{number}/virtual-call", data={"csrf": csrf(w)})
            binding = w.api("GET", f"/api/tickets/{number}/bindings", "water").get_json()["items"][0]
        else:
            binding = bind(w, number, lead, record=bool(i % 3 == 0))
        w.api("POST", f"/api/bindings/{binding['id']}/call", lead, json={})
        ring = fake_api.calls[-1]["form"]  # the department's phone answers: Twilio asks the URL we gave
        url = urlsplit(ring["Url"])
        call(w, ring["From"], ring["To"], f"CAring{i}", path=url.path + (f"?{url.query}" if url.query else ""))
        call(w, phone, binding["virtual_number"], f"CAin{i}")  # the desk dials X itself
        if binding["extension"]:  # ... and keys the extension
            call(w, phone, binding["virtual_number"], f"CAext{i}", path="/twilio/voice/extension",
                 Digits=binding["extension"])
        call(w, "+86" + national, binding["virtual_number"], f"CAback{i}")  # the citizen calls back
        twilio_post(w, f"/twilio/status?call=CAin{i}", {"CallSid": f"CAleg{i}", "CallStatus": "completed",
                                                        "CallDuration": "30"})
        w.client.get(f"/desk/inbox/{number}")
    for who in ("water", "police", "roads"):
        w.api("GET", "/api/tickets?limit=100", who)
        w.api("GET", "/api/virtual-numbers/receipts?limit=1000", who)
    w.client.get("/desk/inbox")

    placed_to = [c["form"]["To"] for c in fake_api.calls]
    assert {"+86" + n for n in citizens.values()} <= set(placed_to)  # every citizen was rung, by the API only
    assert len(w.answers) > 300
    bodies = [body for _, _, body in w.answers]
    assert sum("<Conference" in b for b in bodies) >= 60
    modes = [b["mode"] for number in citizens
             for b in w.api("GET", f"/api/tickets/{number}/bindings", "agent").get_json()["items"]]
    assert len(modes) == 30 and "pair" in modes and "extension" in modes
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for national in citizens.values():
        for form in forms("+86" + national):
            for path, status, body in w.answers:
                assert form not in body, (form, path, status)
            assert form not in logged, form
