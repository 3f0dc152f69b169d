"""The casework API on SQLite and PostgreSQL: moves with ETags, the audit trail, the open moves, department
isolation and the confidential citizen's number."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from base.db import make_engine, make_session_factory
from orders.cases import Casework
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from orders.working_days import WorkingCalendar
from web.app import create_app
from web.auth import create_token
from tests.test_web_support import (  # noqa: F401 (fixtures)
    app,
    assert_matches_spec,
    bearer,
    client,
    closed_port,
    services,
    tokens,
)

CITIZEN = "13800138000"  # asked for confidentiality
OTHER_CITIZEN = "13912345678"
MOVE = "/api/tickets/{number}/moves/{move}"
CREATED = datetime(2024, 5, 1, 1, 0, tzinfo=timezone.utc)


def assert_no_citizen_number(text: str, national: str = CITIZEN) -> None:
    """No form of the number in ``text``: E.164, without +, national, its last 8 digits, spaced or dashed."""
    forms = {"+86" + national, "86" + national, national, national[-8:],
             f"{national[:3]} {national[3:7]} {national[7:]}", f"{national[:3]}-{national[3:7]}-{national[7:]}"}
    found = [form for form in forms if form in text]
    assert not found, f"the citizen's number shows as {found}"
    assert national not in re.sub(r"[\s\-.()/]", "", text)


def _snapshot(number: str, caller: str = CITIZEN, **changes) -> TicketSnapshot:
    values = dict(number=number, revision=1, caller_raw=caller, caller_e164="+86" + caller, caller_kind="mobile",
                  created_at=CREATED, category="general", status="queued", confidential=True,
                  uniqueid=f"1714525200.{number[-3:]}", call_channel=f"SIP/{caller}-0000002a", dialed_number="12345",
                  outcome="routed", ivr_path="1")
    values.update(changes)
    return TicketSnapshot(**values)


@pytest.fixture
def departments(services):
    store = services.departments
    store.create("water", "海口市水务局", "Haikou Water Authority")
    store.create("power", "海口供电局", "Haikou Power Supply")
    store.create("police", "海口市公安局", "Haikou Police")
    store.put_rule("water", "water", supporting=["power"], kind="help", answer_days=5)
    store.put_rule("water", "police", district="meilan", kind="complaint")
    return store


@pytest.fixture
def power_token(session_factory):
    return create_token(session_factory, "test-dept-power", "department", "power")


@pytest.fixture
def tickets(session_factory, departments):
    """Two queued confidential tickets (the second a duplicate of the first) and one of another citizen."""
    store = TicketStore(session_factory)
    snaps = {"main": _snapshot("2024050100001"), "duplicate": _snapshot("2024050100002"),
             "other": _snapshot("2024050100003", caller=OTHER_CITIZEN, confidential=False)}
    for snap in snaps.values():
        assert store.save(snap)
    return {key: snap.number for key, snap in snaps.items()}


def move(client, token, number, name, etag=None, **fields):  # noqa: F811
    headers = bearer(token)
    if etag is not None:
        headers["If-Match"] = etag
    return client.post(MOVE.format(number=number, move=name), headers=headers, json=fields)


def _ticket(client, token, number):  # noqa: F811
    return client.get(f"/api/tickets/{number}", headers=bearer(token))


def _events(client, token, number):  # noqa: F811
    return client.get(f"/api/tickets/{number}/events", headers=bearer(token))


def _moves(client, token, number):  # noqa: F811
    return client.get(f"/api/tickets/{number}/moves", headers=bearer(token))


def _register(client, tokens, number, etag='"1"', **fields):  # noqa: F811
    values = dict(category="water", summary=f"No water since 8am; call back on 138 0013 8000 or +86{CITIZEN}",
                  address=f"12 Haixiu Road (tel {CITIZEN})", district="longhua", confidential=True)
    values.update(fields)
    response = move(client, tokens["agent"], number, "register", etag, **values)
    assert response.status_code == 200, response.json
    return response


def _dispatched(client, tokens, number, supporting=("power",)):  # noqa: F811
    registered = _register(client, tokens, number)
    response = move(client, tokens["agent"], number, "dispatch", registered.headers["ETag"], lead="water",
                    supporting=list(supporting))
    assert response.status_code == 200, response.json
    return response


def _accepted(client, tokens, number):  # noqa: F811
    dispatched = _dispatched(client, tokens, number)
    response = move(client, tokens["dept:water"], number, "accept", dispatched.headers["ETag"])
    assert response.status_code == 200, response.json
    return response


# --- the whole life of a case ----------------------------------------------------------------------------

def test_a_case_from_registration_to_archive(client, tokens, tickets, power_token):  # noqa: F811
    number = tickets["main"]
    first = _ticket(client, tokens["agent"], number)
    assert first.headers["ETag"] == '"1"' and first.json["version"] == 1
    assert first.json["public_state"] == {"state": "open", "detail": None}

    registered = _register(client, tokens, number, etag=first.headers["ETag"])
    assert registered.headers["ETag"] == '"2"'
    assert (registered.json["status"], registered.json["category"], registered.json["district"]) == \
        ("registered", "water", "longhua")
    assert CITIZEN in registered.json["summary"]  # staff read what they wrote
    assert_matches_spec(registered, MOVE, "post")

    offered = _moves(client, tokens["agent"], number)
    assert offered.headers["ETag"] == '"2"'
    assert [m["move"] for m in offered.json["moves"]] == ["resolve", "dispatch", "merge"]
    assert {"move": "dispatch", "needs": ["lead"]} in offered.json["moves"]
    suggestion = offered.json["suggestion"]
    assert suggestion == {"category": "water", "district": None, "kind": "help", "lead": "water",
                          "supporting": ["power"], "answer_days": 5}
    assert_matches_spec(offered, "/api/tickets/{number}/moves")

    dispatched = move(client, tokens["agent"], number, "dispatch", offered.headers["ETag"],
                      lead=suggestion["lead"], supporting=suggestion["supporting"])
    assert dispatched.status_code == 200, dispatched.json
    body = dispatched.json
    assert (body["status"], body["department"], body["supporting"], body["due_kind"]) == \
        ("dispatched", "water", ["power"], "answer")
    assert body["dispatched_at"].endswith("Z") and body["due_at"] > body["dispatched_at"]

    water = _ticket(client, tokens["dept:water"], number)
    assert water.status_code == 200 and water.json["caller"] is None
    assert_no_citizen_number(water.get_data(as_text=True))
    accepted = move(client, tokens["dept:water"], number, "accept", water.headers["ETag"])
    assert accepted.json["status"] == "accepted"
    assert accepted.json["public_state"] == {"state": "in progress", "detail": None}
    assert_no_citizen_number(accepted.get_data(as_text=True))

    supported = move(client, power_token, number, "progress", version=accepted.json["version"],
                     note=f"Crew on site; spoke to the citizen on {CITIZEN}")
    assert supported.status_code == 200 and supported.json["status"] == "in_progress"
    assert_no_citizen_number(supported.get_data(as_text=True))
    progress = move(client, tokens["dept:water"], number, "progress", supported.headers["ETag"],
                    note="Main valve replaced")
    replied = move(client, tokens["dept:water"], number, "reply", progress.headers["ETag"],
                   note="Water is back since 15:00")
    assert replied.json["status"] == "replied" and replied.json["due_at"] is None
    assert replied.json["public_state"] == {"state": "fixed", "detail": None}

    closed = move(client, tokens["agent"], number, "close", replied.headers["ETag"])
    assert closed.json["status"] == "closed"
    reopened = move(client, tokens["agent"], number, "reopen", closed.headers["ETag"],
                    reason="The citizen says the pressure is still low")
    assert reopened.json["status"] == "reopened"

    duplicate = tickets["duplicate"]
    merged = move(client, tokens["agent"], duplicate, "merge", _ticket(client, tokens["agent"], duplicate)
                  .headers["ETag"], into=number)
    assert merged.json["status"] == "merged" and merged.json["merged_into"] == number
    assert merged.json["public_state"] == {"state": "closed", "detail": "duplicate"}
    refused = move(client, tokens["agent"], duplicate, "archive", merged.headers["ETag"])
    assert refused.status_code == 403 and refused.json["error"] == "move_not_allowed"
    archived = move(client, tokens["supervisor"], duplicate, "archive", merged.headers["ETag"])
    assert archived.status_code == 200 and archived.json["status"] == "archived"
    assert archived.headers["ETag"] == f'"{archived.json["version"]}"'

    trail = _events(client, tokens["supervisor"], number)
    assert trail.status_code == 200
    assert [(e["move"], e["actor"], e["role"]) for e in trail.json["items"]] == [
        ("register", "test-agent", "agent"), ("dispatch", "test-agent", "agent"),
        ("accept", "test-dept-water", "department"), ("progress", "test-dept-power", "department"),
        ("progress", "test-dept-water", "department"), ("reply", "test-dept-water", "department"),
        ("close", "test-agent", "agent"), ("reopen", "test-agent", "agent")]
    assert trail.json["items"][1]["details"]["lead"] == "water"
    assert CITIZEN in trail.json["items"][3]["note"]  # staff read the note as written
    assert_matches_spec(trail, "/api/tickets/{number}/events")


# --- versions --------------------------------------------------------------------------------------------

def _unchanged(client, tokens, number, version):  # noqa: F811
    ticket = _ticket(client, tokens["agent"], number)
    assert ticket.json["version"] == version and ticket.json["status"] == "registered"
    assert len(_events(client, tokens["agent"], number).json["items"]) == 1


def test_a_stale_if_match_is_412_and_changes_nothing(client, tokens, tickets):  # noqa: F811
    number = tickets["main"]
    _register(client, tokens, number)
    response = move(client, tokens["agent"], number, "dispatch", '"1"', lead="water")
    assert response.status_code == 412
    assert response.json["error"] == "stale_version" and response.json["current_version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert_matches_spec(response, MOVE, "post")
    _unchanged(client, tokens, number, 2)


def test_a_stale_body_version_is_409_and_changes_nothing(client, tokens, tickets):  # noqa: F811
    number = tickets["main"]
    _register(client, tokens, number)
    response = move(client, tokens["agent"], number, "dispatch", version=1, lead="water")
    assert response.status_code == 409
    assert response.json == {"error": "stale_version", "message": response.json["message"], "current_version": 2}
    assert response.headers["ETag"] == '"2"'
    assert_matches_spec(response, MOVE, "post")
    _unchanged(client, tokens, number, 2)


def test_a_move_without_a_version_is_428(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "register", category="water", summary="s")
    assert response.status_code == 428 and response.json["error"] == "precondition_required"
    assert_matches_spec(response, MOVE, "post")
    assert _ticket(client, tokens["agent"], tickets["main"]).json["status"] == "queued"


@pytest.mark.parametrize("header", ["*", 'W/"1"', '"1", "2"', '"x"', '"0"', '"1'])
def test_a_malformed_if_match_is_400(client, tokens, tickets, header):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "register", header, category="water", summary="s")
    assert response.status_code == 400 and response.json["error"] == "invalid_parameter"


def test_if_match_and_a_different_body_version_is_400(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "register", '"1"', version=2, category="w", summary="s")
    assert response.status_code == 400
    same = move(client, tokens["agent"], tickets["main"], "register", '"1"', version=1, category="w", summary="s")
    assert same.status_code == 200


@pytest.mark.parametrize("version", ["1", True, 1.5, 0])
def test_a_body_version_must_be_a_whole_number(client, tokens, tickets, version):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "register", version=version, category="w", summary="s")
    assert response.status_code == 400


# --- refusals --------------------------------------------------------------------------------------------

def test_an_unknown_move_is_404_listing_the_moves(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "escalate", '"1"')
    assert response.status_code == 404 and response.json["error"] == "unknown_move"
    assert "register" in response.json["message"] and "archive" in response.json["message"]
    assert_matches_spec(response, MOVE, "post")


def test_a_move_the_status_does_not_allow_is_409_naming_the_allowed_ones(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "close", '"1"')
    assert response.status_code == 409 and response.json["error"] == "move_not_allowed_now"
    assert "register" in response.json["message"] and "merge" in response.json["message"]
    assert_matches_spec(response, MOVE, "post")


@pytest.mark.parametrize("fields,word", [
    ({"category": "water"}, "summary"),
    ({"category": "water", "summary": "s", "colour": "red"}, "colour"),
    ({"category": 5, "summary": "s"}, "category"),
    ({"category": "water", "summary": "s", "confidential": "yes"}, "confidential"),
])
def test_missing_or_malformed_fields_are_400(client, tokens, tickets, fields, word):  # noqa: F811
    response = move(client, tokens["agent"], tickets["main"], "register", '"1"', **fields)
    assert response.status_code == 400 and response.json["error"] == "invalid_move"
    assert word in response.json["message"]
    assert_matches_spec(response, MOVE, "post")


def test_dispatch_to_an_unknown_department_is_400(client, tokens, tickets):  # noqa: F811
    registered = _register(client, tokens, tickets["main"])
    response = move(client, tokens["agent"], tickets["main"], "dispatch", registered.headers["ETag"], lead="nobody")
    assert response.status_code == 400 and "nobody" in response.json["message"]


def test_a_body_must_be_a_json_object(client, tokens, tickets):  # noqa: F811
    path = MOVE.format(number=tickets["main"], move="register")
    headers = {**bearer(tokens["agent"]), "If-Match": '"1"'}
    assert client.post(path, headers=headers, data="category=water", content_type="text/plain").status_code == 415
    assert client.post(path, headers=headers, json=["water"]).status_code == 400
    assert client.post(path, headers=headers, data="{", content_type="application/json").status_code == 400


def test_admin_makes_no_moves(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["admin"], tickets["main"], "register", '"1"', category="water", summary="s")
    assert response.status_code == 403 and response.json["error"] == "forbidden"
    assert_matches_spec(response, MOVE, "post")


def test_an_absent_ticket_is_404_and_a_bad_number_400(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["agent"], "2024010100099", "register", '"1"', category="water", summary="s")
    assert response.status_code == 404 and response.json["error"] == "ticket_not_found"
    assert move(client, tokens["agent"], "12a", "register", '"1"').status_code == 400
    assert _events(client, tokens["agent"], "2024010100099").status_code == 404
    assert _moves(client, tokens["agent"], "2024010100099").status_code == 404


def test_moves_need_a_token(client, tickets):  # noqa: F811
    for response in (client.post(MOVE.format(number=tickets["main"], move="register"), json={}),
                     client.get(f"/api/tickets/{tickets['main']}/events"),
                     client.get(f"/api/tickets/{tickets['main']}/moves")):
        assert response.status_code == 401


# --- departments -----------------------------------------------------------------------------------------

def _absent_body(client, token):  # noqa: F811
    return move(client, token, "2024010100099", "accept", '"1"').get_data()


def test_another_departments_ticket_looks_absent_whatever_is_asked(client, tokens, tickets):  # noqa: F811
    number = tickets["main"]
    dispatched = _dispatched(client, tokens, number)
    police = tokens["dept:police"]
    for name in ("accept", "progress", "reply", "return", "close", "escalate-not"):
        response = move(client, police, number, name, dispatched.headers["ETag"], note="n", reason="r")
        if name == "escalate-not":
            assert response.status_code == 404 and response.json["error"] == "unknown_move"
            continue
        assert response.status_code == 404, name
        assert response.get_data() == _absent_body(client, police)
    for reader in (_ticket, _events, _moves):
        response = reader(client, police, number)
        assert response.status_code == 404 and response.json["error"] == "ticket_not_found"
        assert_no_citizen_number(response.get_data(as_text=True))
    assert _ticket(client, tokens["agent"], number).json["version"] == dispatched.json["version"]


def test_an_undispatched_ticket_is_no_departments(client, tokens, tickets):  # noqa: F811
    response = move(client, tokens["dept:water"], tickets["main"], "accept", '"1"')
    assert response.status_code == 404
    assert _events(client, tokens["dept:water"], tickets["main"]).status_code == 404


def test_a_supporting_department_adds_notes_but_does_not_accept_or_reply(client, tokens, tickets, power_token):  # noqa: F811
    number = tickets["main"]
    dispatched = _dispatched(client, tokens, number)
    accept = move(client, power_token, number, "accept", dispatched.headers["ETag"])
    assert accept.status_code == 403 and accept.json["error"] == "move_not_allowed"
    assert _moves(client, power_token, number).json["moves"] == []

    accepted = move(client, tokens["dept:water"], number, "accept", dispatched.headers["ETag"])
    offered = _moves(client, power_token, number)
    assert offered.json["moves"] == [{"move": "progress", "needs": ["note"]}]
    assert offered.json["suggestion"] is None
    reply = move(client, power_token, number, "reply", accepted.headers["ETag"], note="done")
    assert reply.status_code == 403
    note = move(client, power_token, number, "progress", accepted.headers["ETag"], note="Power crew standing by")
    assert note.status_code == 200 and note.json["status"] == "in_progress"
    assert _ticket(client, power_token, number).status_code == 200
    listed = client.get("/api/tickets", headers=bearer(power_token)).json
    assert [t["number"] for t in listed["items"]] == [number]


def test_the_lead_department_may_return_a_ticket(client, tokens, tickets):  # noqa: F811
    number = tickets["main"]
    dispatched = _dispatched(client, tokens, number)
    offered = _moves(client, tokens["dept:water"], number).json["moves"]
    assert offered == [{"move": "accept", "needs": []}, {"move": "return", "needs": ["reason"]}]
    returned = move(client, tokens["dept:water"], number, "return", dispatched.headers["ETag"],
                    reason=f"Not ours: the pipe is private (owner {CITIZEN})")
    assert returned.json["status"] == "returned"
    assert_no_citizen_number(returned.get_data(as_text=True))
    redispatched = move(client, tokens["agent"], number, "dispatch", returned.headers["ETag"], lead="police")
    assert redispatched.json["department"] == "police" and redispatched.json["supporting"] == []
    assert move(client, tokens["dept:water"], number, "accept", redispatched.headers["ETag"]).status_code == 404
    assert move(client, tokens["dept:police"], number, "accept", redispatched.headers["ETag"]).status_code == 200


def test_a_department_never_reads_the_confidential_number(client, tokens, tickets, power_token):  # noqa: F811
    number = tickets["main"]
    accepted = _accepted(client, tokens, number)
    move(client, tokens["dept:water"], number, "progress", accepted.headers["ETag"],
         note=f"Called +86 138-0013-8000 back; also tried 8613800138000 and ({CITIZEN[:3]}) {CITIZEN[3:]}")
    for token in (tokens["dept:water"], power_token):
        for response in (_ticket(client, token, number), _events(client, token, number),
                         _moves(client, token, number),
                         client.get("/api/tickets", headers=bearer(token))):
            assert response.status_code == 200
            assert_no_citizen_number(response.get_data(as_text=True))
    ticket = _ticket(client, tokens["dept:water"], number).json
    assert ticket["caller"] is None and "*" in ticket["summary"] and "*" in ticket["address"]
    assert ticket["call"]["channel"] == "SIP/*******************a"  # the whole digit run that held it
    events = _events(client, tokens["dept:water"], number)
    assert_matches_spec(events, "/api/tickets/{number}/events")
    assert events.json["items"][-1]["note"].startswith("Called ****")  # the run, its + included
    staff = _events(client, tokens["agent"], number).get_data(as_text=True)
    assert "138-0013-8000" in staff


def test_a_department_reads_a_non_confidential_callers_notes_as_written(client, tokens, tickets):  # noqa: F811
    number = tickets["other"]
    registered = _register(client, tokens, number, confidential=False,
                           summary=f"Leak; citizen on {OTHER_CITIZEN}")
    move(client, tokens["agent"], number, "dispatch", registered.headers["ETag"], lead="water")
    ticket = _ticket(client, tokens["dept:water"], number).json
    assert ticket["caller"]["number"] == "+86" + OTHER_CITIZEN and OTHER_CITIZEN in ticket["summary"]


# --- the open moves --------------------------------------------------------------------------------------

def test_open_moves_for_each_role(client, tokens, tickets):  # noqa: F811
    number = tickets["main"]
    agent = _moves(client, tokens["agent"], number)
    assert [m["move"] for m in agent.json["moves"]] == ["register", "merge"]
    assert agent.json["suggestion"] is None  # the call's category (general) has no rule
    assert agent.json["status"] == "queued" and agent.json["version"] == 1
    assert _moves(client, tokens["admin"], number).json["moves"] == []
    registered = _register(client, tokens, number, district="meilan")
    assert _moves(client, tokens["supervisor"], number).json["suggestion"]["lead"] == "police"  # the district's rule
    dispatched = move(client, tokens["agent"], number, "dispatch", registered.headers["ETag"], lead="water")
    assert dispatched.status_code == 200
    assert [m["move"] for m in _moves(client, tokens["agent"], number).json["moves"]] == []


# --- storage ---------------------------------------------------------------------------------------------

def test_ticket_database_down_is_503(services, tokens):  # noqa: F811
    engine = make_engine(f"postgresql://hotline:pw@127.0.0.1:{closed_port()}/hotline")
    try:
        factory = make_session_factory(engine)
        services.__dict__["tickets"] = TicketStore(factory)
        services.__dict__["casework"] = Casework(factory, WorkingCalendar())
        down = create_app(services, token_cache_ttl=0).test_client()
        for response in (move(down, tokens["agent"], "2024050100001", "register", '"1"', category="w", summary="s"),
                         _events(down, tokens["agent"], "2024050100001")):
            assert response.status_code == 503 and response.json["error"] == "storage_unavailable"
            assert response.headers["Retry-After"] == "5"
    finally:
        engine.dispose()
