"""The departments API on SQLite and PostgreSQL: departments, phones, the dispatch catalogue, the ranking."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orders.cases import Actor, MoveFields
from orders.lifecycle import Move, Role
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from orders.working_days import HOTLINE_TZ
from tests.test_web_support import (  # noqa: F401 (fixtures)
    app,
    assert_matches_spec,
    bearer,
    client,
    services,
    tokens,
)

WATER_DESK = "+8689866123456"


@pytest.fixture
def departments(services):
    store = services.departments
    store.create("water", "海口市水务局", "Haikou Water Authority")
    store.create("city-management", "海口市综合行政执法局", "Haikou City Management")
    store.create("police", "海口市公安局", "Haikou Police")
    store.add_phone("water", WATER_DESK, "duty desk")
    store.put_rule("water", "water", supporting=["city-management"], answer_days=5)
    return store


def _get(client, path, token):  # noqa: F811
    return client.get(path, headers=bearer(token))


def _send(client, method, path, token, body=None):  # noqa: F811
    return client.open(path, method=method, headers=bearer(token), json=body)


# --- departments -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "supervisor", "agent", "dept:police"])
def test_every_token_lists_the_departments(client, tokens, departments, role):  # noqa: F811
    response = _get(client, "/api/departments", tokens[role])
    assert response.status_code == 200
    assert [d["code"] for d in response.json["items"]] == ["city-management", "police", "water"]
    assert response.json["items"][2] == {"code": "water", "name_zh": "海口市水务局", "name_en": "Haikou Water Authority",
                                         "parent_code": None, "active": True, "phones": [WATER_DESK]}
    assert response.headers["Cache-Control"] == "private, no-store"
    assert_matches_spec(response, "/api/departments")


def test_one_department_and_an_unknown_one(client, tokens, departments):  # noqa: F811
    response = _get(client, "/api/departments/water", tokens["dept:water"])
    assert response.status_code == 200 and response.json["phones"] == [WATER_DESK]
    assert_matches_spec(response, "/api/departments/{code}")
    for code in ("nobody", "Water", "a%00b"):
        missing = _get(client, f"/api/departments/{code}", tokens["agent"])
        assert missing.status_code == 404 and missing.json["error"] == "department_not_found"
    assert_matches_spec(missing, "/api/departments/{code}")


def test_admin_creates_a_department(client, tokens, departments):  # noqa: F811
    body = {"code": "longhua-city-management", "name_zh": "龙华区综合行政执法局",
            "name_en": "Longhua City Management", "parent_code": "city-management"}
    response = _send(client, "POST", "/api/departments", tokens["admin"], body)
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/api/departments/longhua-city-management")
    assert response.json == {**body, "active": True, "phones": []}
    assert_matches_spec(response, "/api/departments", "post")
    again = _send(client, "POST", "/api/departments", tokens["admin"], body)
    assert again.status_code == 409 and again.json["error"] == "department_exists"
    assert_matches_spec(again, "/api/departments", "post")


@pytest.mark.parametrize("body,word", [
    ({"code": "Bad Code", "name_zh": "x", "name_en": "x"}, "code"),
    ({"code": "roads", "name_zh": "", "name_en": "x"}, "name_zh"),
    ({"code": "roads", "name_zh": "x"}, "name_en"),
    ({"code": "roads", "name_zh": "x", "name_en": "x", "parent_code": "nobody"}, "parent_code"),
    ({"code": "roads", "name_zh": "x", "name_en": "x", "phones": []}, "phones"),
    ({"code": ["roads"], "name_zh": "x", "name_en": "x"}, "code"),
    ({"code": "ranking", "name_zh": "x", "name_en": "x"}, "ranking"),
])
def test_a_department_that_cannot_be_is_400(client, tokens, departments, body, word):  # noqa: F811
    response = _send(client, "POST", "/api/departments", tokens["admin"], body)
    assert response.status_code == 400 and word in response.json["message"]
    assert_matches_spec(response, "/api/departments", "post")


@pytest.mark.parametrize("role", ["supervisor", "agent", "dept:water"])
def test_only_admin_changes_departments(client, tokens, departments, role):  # noqa: F811
    token = tokens[role]
    attempts = [
        _send(client, "POST", "/api/departments", token, {"code": "roads", "name_zh": "x", "name_en": "x"}),
        _send(client, "PATCH", "/api/departments/water", token, {"active": False}),
        _send(client, "POST", "/api/departments/water/phones", token, {"number": "+8689866000000"}),
        _send(client, "DELETE", f"/api/departments/water/phones/{WATER_DESK}", token),
    ]
    assert [r.status_code for r in attempts] == [403] * 4
    assert_matches_spec(attempts[1], "/api/departments/{code}", "patch")
    assert _get(client, "/api/departments/water", tokens["admin"]).json["phones"] == [WATER_DESK]


def test_admin_renames_moves_and_retires_a_department(client, tokens, departments):  # noqa: F811
    admin = tokens["admin"]
    renamed = _send(client, "PATCH", "/api/departments/water", admin,
                    {"name_en": "Haikou Water Group", "parent_code": "city-management"})
    assert renamed.status_code == 200
    assert (renamed.json["name_en"], renamed.json["name_zh"], renamed.json["parent_code"]) == \
        ("Haikou Water Group", "海口市水务局", "city-management")
    assert_matches_spec(renamed, "/api/departments/{code}", "patch")
    retired = _send(client, "PATCH", "/api/departments/police", admin, {"active": False})
    assert retired.json["active"] is False
    listed = _get(client, "/api/departments", admin).json["items"]
    assert "police" not in [d["code"] for d in listed]
    everything = _get(client, "/api/departments?include_inactive=true", admin).json["items"]
    assert "police" in [d["code"] for d in everything]
    assert _get(client, "/api/departments?include_inactive=yes", admin).status_code == 400


@pytest.mark.parametrize("body,status", [
    ({"parent_code": "water"}, 400),  # its own parent
    ({"parent_code": "nobody"}, 400),
    ({"active": "no"}, 400),
    ({"name_zh": "  "}, 400),
    ({"code": "other"}, 400),
])
def test_a_change_that_cannot_be_is_400(client, tokens, departments, body, status):  # noqa: F811
    response = _send(client, "PATCH", "/api/departments/water", tokens["admin"], body)
    assert response.status_code == status
    assert_matches_spec(response, "/api/departments/{code}", "patch")


def test_changing_an_unknown_department_is_404(client, tokens, departments):  # noqa: F811
    response = _send(client, "PATCH", "/api/departments/nobody", tokens["admin"], {"active": False})
    assert response.status_code == 404
    assert _send(client, "POST", "/api/departments/nobody/phones", tokens["admin"],
                 {"number": WATER_DESK}).status_code == 404


def test_phones_are_added_and_removed(client, tokens, departments):  # noqa: F811
    admin = tokens["admin"]
    added = _send(client, "POST", "/api/departments/police/phones", admin, {"number": "0898-66110110", "label": "desk"})
    assert added.status_code == 201 and added.json["phones"] == ["+8689866110110"]
    assert_matches_spec(added, "/api/departments/{code}/phones", "post")
    again = _send(client, "POST", "/api/departments/police/phones", admin, {"number": "+8689866110110"})
    assert again.status_code == 200 and again.json["phones"] == ["+8689866110110"]
    bad = _send(client, "POST", "/api/departments/police/phones", admin, {"number": "12"})
    assert bad.status_code == 400
    assert_matches_spec(bad, "/api/departments/{code}/phones", "post")
    assert _send(client, "POST", "/api/departments/police/phones", admin, {"number": 8689866110110}).status_code == 400

    removed = _send(client, "DELETE", "/api/departments/police/phones/+8689866110110", admin)
    assert removed.status_code == 200 and removed.json["phones"] == []
    assert_matches_spec(removed, "/api/departments/{code}/phones/{e164}", "delete")
    gone = _send(client, "DELETE", "/api/departments/police/phones/+8689866110110", admin)
    assert gone.status_code == 404 and gone.json["error"] == "phone_not_found"
    assert _send(client, "DELETE", "/api/departments/nobody/phones/+8689866110110", admin).status_code == 404


def test_department_endpoints_need_a_token(client, departments):  # noqa: F811
    for path in ("/api/departments", "/api/departments/water", "/api/catalogue",
                 "/api/departments/ranking?since=2024-05-01"):
        assert client.get(path).status_code == 401


# --- the catalogue ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "supervisor", "agent"])
def test_staff_read_the_catalogue(client, tokens, departments, role):  # noqa: F811
    response = _get(client, "/api/catalogue", tokens[role])
    assert response.status_code == 200
    assert response.json["items"] == [{"category": "water", "district": None, "kind": "help", "lead": "water",
                                       "supporting": ["city-management"], "answer_days": 5}]
    assert_matches_spec(response, "/api/catalogue")


def test_departments_do_not_read_the_catalogue(client, tokens, departments):  # noqa: F811
    response = _get(client, "/api/catalogue", tokens["dept:water"])
    assert response.status_code == 403
    assert_matches_spec(response, "/api/catalogue")


@pytest.mark.parametrize("role", ["admin", "supervisor"])
def test_rules_are_put_and_deleted(client, tokens, departments, role):  # noqa: F811
    token = tokens[role]
    put = _send(client, "PUT", "/api/catalogue/noise?district=longhua", token,
                {"lead": "city-management", "supporting": ["police"], "kind": "complaint"})
    assert put.status_code == 200
    assert put.json == {"category": "noise", "district": "longhua", "kind": "complaint", "lead": "city-management",
                        "supporting": ["police"], "answer_days": 15}
    assert_matches_spec(put, "/api/catalogue/{category}", "put")
    replaced = _send(client, "PUT", "/api/catalogue/noise?district=longhua", token, {"lead": "police",
                                                                                     "answer_days": 3})
    assert (replaced.json["lead"], replaced.json["kind"], replaced.json["answer_days"]) == ("police", "help", 3)
    rules = _get(client, "/api/catalogue", token).json["items"]
    assert [(r["category"], r["district"]) for r in rules] == [("noise", "longhua"), ("water", None)]

    anywhere = _send(client, "DELETE", "/api/catalogue/noise", token)
    assert anywhere.status_code == 404 and anywhere.json["error"] == "rule_not_found"
    assert_matches_spec(anywhere, "/api/catalogue/{category}", "delete")
    deleted = _send(client, "DELETE", "/api/catalogue/noise?district=longhua", token)
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert [r["category"] for r in _get(client, "/api/catalogue", token).json["items"]] == ["water"]


def test_agents_and_departments_do_not_change_the_catalogue(client, tokens, departments):  # noqa: F811
    for role in ("agent", "dept:water"):
        put = _send(client, "PUT", "/api/catalogue/water", tokens[role], {"lead": "police"})
        delete = _send(client, "DELETE", "/api/catalogue/water", tokens[role])
        assert put.status_code == delete.status_code == 403
    assert _get(client, "/api/catalogue", tokens["agent"]).json["items"][0]["lead"] == "water"


@pytest.mark.parametrize("path,body,word", [
    ("/api/catalogue/noise", {"lead": "nobody"}, "nobody"),
    ("/api/catalogue/noise", {}, "lead"),
    ("/api/catalogue/noise", {"lead": "police", "kind": "whim"}, "kind"),
    ("/api/catalogue/noise", {"lead": "police", "answer_days": 0}, "answer_days"),
    ("/api/catalogue/noise", {"lead": "police", "answer_days": "3"}, "answer_days"),
    ("/api/catalogue/noise", {"lead": "police", "supporting": "water"}, "supporting"),
    ("/api/catalogue/noise", {"lead": "police", "colour": "red"}, "colour"),
    ("/api/catalogue/noise?district=Long%20Hua", {"lead": "police"}, "district"),
    ("/api/catalogue/" + "n" * 51, {"lead": "police"}, "category"),
    ("/api/catalogue/no%00ise", {"lead": "police"}, "category"),
])
def test_a_rule_that_cannot_be_is_400(client, tokens, departments, path, body, word):  # noqa: F811
    response = _send(client, "PUT", path, tokens["supervisor"], body)
    assert response.status_code == 400 and word in response.json["message"]
    assert_matches_spec(response, "/api/catalogue/{category}", "put")


# --- the lateness ranking --------------------------------------------------------------------------------

@pytest.fixture
def overdue(services, departments):
    """A water ticket dispatched now and past its deadline (the deadline job ran as if weeks later)."""
    created = datetime.now(timezone.utc) - timedelta(minutes=5)
    TicketStore(services.session_factory).save(TicketSnapshot(
        number="2024050100001", revision=1, caller_raw="13800138000", caller_e164="+8613800138000",
        caller_kind="mobile", created_at=created, status="queued"))
    agent = Actor("test-agent", Role.agent)
    version = services.casework.apply("2024050100001", Move.register, agent, 1,
                                      MoveFields(category="water", summary="no water"))
    services.casework.apply("2024050100001", Move.dispatch, agent, version, MoveFields(lead="water"))
    assert services.casework.scan_deadlines(now=datetime.now(timezone.utc) + timedelta(days=60))


@pytest.mark.parametrize("role", ["admin", "supervisor", "agent"])
def test_the_ranking_names_the_late_departments(client, tokens, overdue, role):  # noqa: F811
    today = datetime.now(HOTLINE_TZ).date()
    response = _get(client, f"/api/departments/ranking?since={today - timedelta(days=7)}", tokens[role])
    assert response.status_code == 200, response.json
    assert response.json["items"] == [{"department": "water", "name_zh": "海口市水务局",
                                       "name_en": "Haikou Water Authority", "overdue_open": 1, "overdue_total": 0,
                                       "dispatched": 1}]
    since = datetime.fromisoformat(response.json["since"])
    until = datetime.fromisoformat(response.json["until"])
    assert since.astimezone(HOTLINE_TZ).date() == today - timedelta(days=7)
    assert until.astimezone(HOTLINE_TZ).date() == today + timedelta(days=1)
    assert_matches_spec(response, "/api/departments/ranking")


def test_the_ranking_of_a_past_period(client, tokens, overdue):  # noqa: F811
    response = _get(client, "/api/departments/ranking?since=2020-01-01&until=2020-01-31", tokens["supervisor"])
    assert response.json["since"] == "2019-12-31T16:00:00Z" and response.json["until"] == "2020-01-31T16:00:00Z"
    assert response.json["items"][0]["dispatched"] == 0  # overdue now, dispatched outside the period


@pytest.mark.parametrize("query", ["", "since=yesterday", "since=2024-5-1", "since=2024-05-01&until=2024-04-30",
                                   "since=2024-02-30", "since=20240501"])
def test_a_ranking_needs_a_period(client, tokens, departments, query):  # noqa: F811
    response = _get(client, "/api/departments/ranking?" + query, tokens["supervisor"])
    assert response.status_code == 400 and response.json["error"] == "invalid_parameter"
    assert_matches_spec(response, "/api/departments/ranking")


def test_departments_do_not_read_the_ranking(client, tokens, departments):  # noqa: F811
    response = _get(client, "/api/departments/ranking?since=2024-05-01", tokens["dept:water"])
    assert response.status_code == 403
