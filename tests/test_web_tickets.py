"""GET /api/tickets and /api/tickets/<number> on SQLite and PostgreSQL: filters, paging, validation,
department scoping and the confidential caller's number."""

from __future__ import annotations

import dataclasses
import types
import unicodedata
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from config import load_settings
from base.db import make_engine, make_session_factory
from hotline.services import Services
from web import tickets as tickets_api
from web.app import create_app
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from tests.test_web_support import (  # noqa: F401 (fixtures)
    app,
    assert_matches_spec,
    bearer,
    client,
    closed_port,
    services,
    tokens,
)

SECRET = "13912345678"  # a confidential citizen (water ticket)
OPEN = "13800138000"  # a citizen who did not ask for confidentiality (water ticket)
POLICE_SECRET = "18612345678"  # a confidential citizen of a police ticket


def _at(day: int, hour: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, 0, tzinfo=timezone.utc)


@pytest.fixture
def tickets(session_factory):
    """Four tickets, created one a day from 2024-05-01, newest last."""
    store = TicketStore(session_factory)
    snaps = {
        "secret": TicketSnapshot(
            number="2024050100001", revision=1, caller_raw=SECRET, caller_e164="+86" + SECRET,
            caller_kind="mobile", created_at=_at(1), updated_at=_at(1, 3), ivr_path="1>3", category="water",
            urgency="high", confidential=True, status="dispatched", department="water",
            uniqueid="1714525200.1", linkedid="1714525200.1", call_channel=f"SIP/{SECRET}-00000001",
            dialed_number="12345", answered_at=_at(1, 2), ended_at=_at(1, 3), outcome="routed"),
        "open": TicketSnapshot(
            number="2024050200001", revision=1, caller_raw="+86" + OPEN, caller_e164="+86" + OPEN,
            caller_kind="mobile", created_at=_at(2), category="water", status="dispatched", department="water"),
        "police": TicketSnapshot(
            number="2024050300001", revision=1, caller_raw="0" + POLICE_SECRET, caller_e164="+86" + POLICE_SECRET,
            caller_kind="mobile", created_at=_at(3), language="en", category="safety", urgency="high",
            confidential=True, status="dispatched", department="police", uniqueid="1714698000.7",
            call_channel="PJSIP/trunk-00000007", outcome="routed"),
        "anonymous": TicketSnapshot(
            number="2024050400001", revision=1, caller_raw="anonymous", caller_e164=None, caller_kind="withheld",
            created_at=_at(4), category="general", status="queued", uniqueid="1714784400.9",
            outcome="routed"),
    }
    for snap in snaps.values():
        assert store.save(snap)
    return {key: snap.number for key, snap in snaps.items()}


def _get(client, path, token):  # noqa: F811
    return client.get(path, headers=bearer(token))


def _numbers(response) -> list[str]:
    return [item["number"] for item in response.json["items"]]


# --- one ticket ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "supervisor", "agent"])
def test_staff_get_the_whole_ticket(client, tokens, tickets, role):  # noqa: F811
    response = _get(client, f"/api/tickets/{tickets['secret']}", tokens[role])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.json == {
        "number": "2024050100001",
        "status": "dispatched",
        "channel": "phone",
        "language": "zh-CN",
        "category": "water",
        "urgency": "high",
        "confidential": True,
        "department": "water",
        "ivr_path": "1>3",
        "created_at": "2024-05-01T01:00:00Z",
        "updated_at": "2024-05-01T03:00:00Z",
        "caller": {"number": "+86" + SECRET, "kind": "mobile"},
        "call": {
            "uniqueid": "1714525200.1",
            "linkedid": "1714525200.1",
            "channel": f"SIP/{SECRET}-00000001",
            "dialed_number": "12345",
            "started_at": "2024-05-01T01:00:00Z",
            "answered_at": "2024-05-01T02:00:00Z",
            "ended_at": "2024-05-01T03:00:00Z",
            "outcome": "routed",
        },
        "version": 1,
        "summary": None,
        "address": None,
        "district": None,
        "supporting": [],
        "merged_into": None,
        "dispatched_at": None,
        "due_at": None,
        "due_kind": None,
        "overdue_since": None,
        "public_state": {"state": "open", "detail": None},
    }
    assert_matches_spec(response, "/api/tickets/{number}")


def test_ticket_without_call_and_withheld_caller(client, tokens, tickets):  # noqa: F811
    open_ticket = _get(client, f"/api/tickets/{tickets['open']}", tokens["agent"]).json
    assert open_ticket["call"] is None
    anonymous = _get(client, f"/api/tickets/{tickets['anonymous']}", tokens["agent"])
    assert anonymous.json["caller"] == {"number": "anonymous", "kind": "withheld"}
    assert anonymous.json["department"] is None
    assert_matches_spec(anonymous, "/api/tickets/{number}")


def test_unknown_ticket_is_404(client, tokens, tickets):  # noqa: F811
    response = _get(client, "/api/tickets/2024010100099", tokens["admin"])
    assert response.status_code == 404
    assert response.json["error"] == "ticket_not_found"
    assert_matches_spec(response, "/api/tickets/{number}")


@pytest.mark.parametrize("number", ["12a4", "-1", "1.5", "\uff11\uff12\uff13", "\u0661\u0662", "1" * 21])
def test_ticket_number_must_be_ascii_digits(client, tokens, number):  # noqa: F811
    response = _get(client, "/api/tickets/" + quote(number), tokens["admin"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert "number" in response.json["message"]


def test_tickets_need_a_token(client, tickets):  # noqa: F811
    for path in ("/api/tickets", f"/api/tickets/{tickets['open']}"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_matches_spec(response, path if path == "/api/tickets" else "/api/tickets/{number}")


def test_tickets_are_read_only(client, tokens):  # noqa: F811
    response = client.post("/api/tickets", headers=bearer(tokens["admin"]), json={})
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"


# --- departments ---------------------------------------------------------------------------------------

def _digits_absent(text: str, *numbers: str) -> None:
    for number in numbers:
        # The national digits are inside every form (+86..., 0..., 86...), so this covers them all.
        assert number not in text
        assert number[-8:] not in text


def test_department_sees_own_confidential_ticket_without_the_number(client, tokens, tickets):  # noqa: F811
    response = _get(client, f"/api/tickets/{tickets['secret']}", tokens["dept:water"])
    assert response.status_code == 200
    body = response.json
    assert body["caller"] is None
    assert body["confidential"] is True
    # The channel name carried the number: its whole digit run is hidden (the suffix says nothing).
    assert body["call"]["channel"] == "SIP/********************"
    assert body["call"]["dialed_number"] == "12345"
    _digits_absent(response.get_data(as_text=True), SECRET)
    assert_matches_spec(response, "/api/tickets/{number}")


def test_department_sees_a_non_confidential_caller(client, tokens, tickets):  # noqa: F811
    response = _get(client, f"/api/tickets/{tickets['open']}", tokens["dept:water"])
    assert response.json["caller"] == {"number": "+86" + OPEN, "kind": "mobile"}


@pytest.mark.parametrize("key", ["police", "anonymous"])
def test_other_departments_tickets_look_absent(client, tokens, tickets, key):  # noqa: F811
    response = _get(client, f"/api/tickets/{tickets[key]}", tokens["dept:water"])
    absent = _get(client, "/api/tickets/2024010100099", tokens["dept:water"])
    assert response.status_code == absent.status_code == 404
    assert response.get_data() == absent.get_data()
    _digits_absent(response.get_data(as_text=True), POLICE_SECRET)


def test_department_list_is_its_own_and_never_shows_a_secret_number(client, tokens, tickets):  # noqa: F811
    response = _get(client, "/api/tickets", tokens["dept:water"])
    assert response.status_code == 200
    assert _numbers(response) == [tickets["open"], tickets["secret"]]
    assert response.json["total"] == 2
    text = response.get_data(as_text=True)
    _digits_absent(text, SECRET, POLICE_SECRET)
    assert OPEN in text
    assert_matches_spec(response, "/api/tickets")

    police = _get(client, "/api/tickets", tokens["dept:police"])
    assert _numbers(police) == [tickets["police"]]
    assert police.json["items"][0]["caller"] is None
    _digits_absent(police.get_data(as_text=True), POLICE_SECRET, SECRET, OPEN)


@pytest.mark.parametrize("department,expected", [("water", ["open", "secret"]), ("police", [])])
def test_department_filter_cannot_widen_a_departments_view(client, tokens, tickets, department, expected):  # noqa: F811
    response = _get(client, f"/api/tickets?department={department}", tokens["dept:water"])
    assert response.status_code == 200
    assert _numbers(response) == [tickets[key] for key in expected]
    assert response.json["total"] == len(expected)
    _digits_absent(response.get_data(as_text=True), POLICE_SECRET)


@pytest.mark.parametrize("caller", ["+86" + SECRET, SECRET, "+8619900000000", "", "nonsense"])
def test_department_may_not_filter_by_caller(client, tokens, tickets, caller):  # noqa: F811
    # The same 400 whether the number has a ticket of this department or not: no oracle.
    response = _get(client, "/api/tickets?caller=" + quote(caller), tokens["dept:water"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert response.json["message"].startswith("caller:")
    _digits_absent(response.get_data(as_text=True), SECRET)


# --- lists for staff -----------------------------------------------------------------------------------

def test_staff_list_everything_newest_first(client, tokens, tickets):  # noqa: F811
    response = _get(client, "/api/tickets", tokens["supervisor"])
    assert response.status_code == 200
    assert _numbers(response) == [tickets[k] for k in ("anonymous", "police", "open", "secret")]
    assert (response.json["total"], response.json["limit"], response.json["offset"]) == (4, 50, 0)
    assert SECRET in response.get_data(as_text=True)  # staff see the confidential number
    assert_matches_spec(response, "/api/tickets")


def test_paging(client, tokens, tickets):  # noqa: F811
    response = _get(client, "/api/tickets?limit=2&offset=1", tokens["agent"])
    assert _numbers(response) == [tickets["police"], tickets["open"]]
    assert (response.json["total"], response.json["limit"], response.json["offset"]) == (4, 2, 1)
    past_the_end = _get(client, "/api/tickets?offset=10", tokens["agent"])
    assert past_the_end.json["items"] == [] and past_the_end.json["total"] == 4


@pytest.mark.parametrize(
    "query,expected",
    [
        ("status=queued", ["anonymous"]),
        ("status=dispatched&department=water", ["open", "secret"]),
        ("category=water", ["open", "secret"]),
        ("urgency=high", ["police", "secret"]),
        ("language=en", ["police"]),
        ("channel=phone", ["anonymous", "police", "open", "secret"]),
        ("department=police", ["police"]),
        ("caller=" + quote("+86" + SECRET), ["secret"]),
        ("caller=" + quote("139 1234 5678"), ["secret"]),
        ("caller=0" + POLICE_SECRET, ["police"]),
        ("caller=" + quote("+8619900000000"), []),
        ("created_from=2024-05-02", ["anonymous", "police", "open"]),
        ("created_to=2024-05-02", ["secret"]),
        ("created_from=2024-05-02T01:00:00Z&created_to=2024-05-03T01:00:00Z", ["open"]),
        # 09:00 in Beijing is 01:00 UTC; the "+" arrives as a space when a client forgets to encode it.
        ("created_from=2024-05-03T09:00:00" + quote("+08:00"), ["anonymous", "police"]),
        ("created_from=2024-05-03T09:00:00+08:00", ["anonymous", "police"]),
        ("status=&category=", ["anonymous", "police", "open", "secret"]),
        ("status=closed", []),
    ],
)
def test_filters(client, tokens, tickets, query, expected):  # noqa: F811
    response = _get(client, "/api/tickets?" + query, tokens["admin"])
    assert response.status_code == 200, response.json
    assert _numbers(response) == [tickets[key] for key in expected]
    assert response.json["total"] == len(expected)


@pytest.mark.parametrize(
    "query,parameter",
    [
        ("status=open", "status"),
        ("urgency=critical", "urgency"),
        ("language=fr", "language"),
        ("channel=fax", "channel"),
        ("category=" + "x" * 51, "category"),
        ("department=" + "x" * 101, "department"),
        ("created_from=yesterday", "created_from"),
        ("created_to=2024-13-01", "created_to"),
        ("created_from=2024-05-02&created_to=2024-05-01", "created_to"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=2.5", "limit"),
        ("offset=-1", "offset"),
        ("caller=not-a-number", "caller"),
        ("caller=12345", "caller"),  # the hotline's own short number has no E.164 form
        ("caller=" + quote("+999" + SECRET), "caller"),
        ("stauts=queued", "stauts"),
        ("status=queued&status=closed", "status"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(client, tokens, tickets, query, parameter):  # noqa: F811
    response = _get(client, "/api/tickets?" + query, tokens["admin"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert response.json["message"].startswith(parameter + ":")
    _digits_absent(response.json["message"], SECRET)
    assert_matches_spec(response, "/api/tickets")


# --- storage down --------------------------------------------------------------------------------------

def _unreachable_session_factory():
    engine = make_engine(f"postgresql://hotline:pw@127.0.0.1:{closed_port()}/hotline")
    return engine, make_session_factory(engine)


def test_ticket_database_down_is_503(services, tokens):  # noqa: F811
    engine, factory = _unreachable_session_factory()
    try:
        services.__dict__["tickets"] = TicketStore(factory)  # tokens still readable, tickets not
        client = create_app(services, token_cache_ttl=0).test_client()  # noqa: F811
        for path in ("/api/tickets", "/api/tickets/2024050100001"):
            response = _get(client, path, tokens["admin"])
            assert response.status_code == 503
            assert response.json["error"] == "storage_unavailable"
            assert response.headers["Retry-After"] == "5"
            assert "127.0.0.1" not in response.get_data(as_text=True)
    finally:
        engine.dispose()


def test_token_database_down_is_503(tmp_path, redis_conn):
    engine, factory = _unreachable_session_factory()
    try:
        settings = load_settings(environ={}, data_dir=tmp_path, database_url=str(engine.url))
        services = Services(settings=settings, engine=engine, session_factory=factory, _redis=redis_conn)  # noqa: F811
        response = create_app(services).test_client().get("/api/tickets", headers=bearer("hl_whatever"))
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json["error"] == "storage_unavailable"
    assert_matches_spec(response, "/api/tickets")


# --- hostile input: 400, never a 500 (PostgreSQL refuses NUL bytes; dates overflow in UTC) -------------

@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+14:00",  # before the year 1 in UTC
    "9999-12-31T23:59:59-14:00",  # after the year 9999 in UTC
    "10000-01-01",
    "10000-01-01T00:00:00Z",
])
@pytest.mark.parametrize("parameter", ["created_from", "created_to"])
def test_dates_outside_what_utc_can_hold_are_400(client, tokens, tickets, parameter, value):  # noqa: F811
    response = _get(client, f"/api/tickets?{parameter}=" + quote(value), tokens["admin"])
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_parameter"
    assert response.json["message"].startswith(parameter + ":")
    assert_matches_spec(response, "/api/tickets")


@pytest.mark.parametrize("query,expected", [
    ("created_from=" + quote("0001-01-01T00:00:00Z"), ["anonymous", "police", "open", "secret"]),
    ("created_from=" + quote("0001-01-01T00:00:00-14:00"), ["anonymous", "police", "open", "secret"]),
    ("created_from=0001-01-01&created_to=9999-12-31", ["anonymous", "police", "open", "secret"]),
    ("created_to=" + quote("9999-12-31T23:59:59.999999+14:00"), ["anonymous", "police", "open", "secret"]),
    ("created_from=" + quote("9999-12-31T23:59:59.999999Z"), []),
    ("created_to=" + quote("0001-01-01T00:00:00Z"), []),
])
def test_the_extreme_dates_utc_can_hold_are_answered(client, tokens, tickets, query, expected):  # noqa: F811
    response = _get(client, "/api/tickets?" + query, tokens["admin"])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _numbers(response) == [tickets[key] for key in expected]


@pytest.mark.parametrize("parameter", sorted(tickets_api.LIST_PARAMETERS))
def test_control_characters_in_any_parameter_are_400(client, tokens, tickets, parameter):  # noqa: F811
    for value in ("%00", "water%00", "wa%00ter", "%01", "water%0A", "%09water", "%7F", "%C2%85"):
        response = _get(client, f"/api/tickets?{parameter}={value}", tokens["admin"])
        assert response.status_code == 400, (value, response.get_data(as_text=True))
        assert response.json["error"] == "invalid_parameter"
        assert response.json["message"].startswith(parameter + ":")
        assert_matches_spec(response, "/api/tickets")


def test_control_characters_in_the_ticket_number_are_400(client, tokens, tickets):  # noqa: F811
    for role in ("admin", "dept:water"):
        for number in ("%00", "2024050100001%00", "%002024050100001", "20240501%0000001", "%0A", "%7F"):
            response = _get(client, "/api/tickets/" + number, tokens[role])
            assert response.status_code == 400, (number, response.get_data(as_text=True))
            assert response.json["error"] == "invalid_parameter"
            assert_matches_spec(response, "/api/tickets/{number}")


@pytest.mark.parametrize("name", [SECRET, "+86" + SECRET, "x%00y", "caller" + SECRET])
def test_an_unknown_parameter_name_is_not_echoed_when_it_could_be_a_number(client, tokens, tickets, name):  # noqa: F811
    response = _get(client, f"/api/tickets?{quote(name, safe='%')}=1", tokens["admin"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert "the known ones are" in response.json["message"]
    _digits_absent(response.get_data(as_text=True), SECRET)


# --- local numbers -------------------------------------------------------------------------------------

def test_an_8_digit_caller_is_a_local_landline(client, services, tokens, session_factory):  # noqa: F811
    TicketStore(session_factory).save(TicketSnapshot(
        number="2024050500001", revision=1, caller_raw="66668888", caller_e164="+8689866668888",
        caller_kind="landline", created_at=_at(5), category="general", status="queued"))
    response = _get(client, "/api/tickets?caller=66668888", tokens["admin"])
    assert response.status_code == 200
    assert _numbers(response) == ["2024050500001"]

    services.settings = dataclasses.replace(services.settings, local_area_code="")
    response = _get(client, "/api/tickets?caller=66668888", tokens["admin"])
    assert response.status_code == 400 and response.json["message"].startswith("caller:")


@pytest.mark.parametrize("text", ["13800138000", "+86 138-0013-8000", "(138) 0013 8000", "call 0013 8000 now",
                                  "１３８００１３８０００", "+86\u00a0138\u30000013\u30008000", "8613800138000#"])
def test_the_scrubber_hides_the_caller_in_every_way_people_write_it(text):
    view = types.SimpleNamespace(caller_raw="13800138000", caller_e164="+8613800138000")
    scrubbed = tickets_api.caller_scrubber(view)(text)
    digits = "".join(str(unicodedata.decimal(ch)) for ch in scrubbed if ch.isdecimal())
    assert "00138000" not in digits and "*" in scrubbed


def test_the_scrubber_leaves_other_numbers_and_the_ticket_number_alone():
    view = types.SimpleNamespace(caller_raw="13800138000", caller_e164="+8613800138000")
    text = "ticket 2026112800042, water main 0898-6666 8888, 12345"
    assert tickets_api.caller_scrubber(view)(text) == text
