"""Bearer-token auth: token management and the require_roles decorator, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from flask import Blueprint, g, jsonify
from sqlalchemy import select

from web.auth import (
    TokenAuthenticator,
    TokenError,
    TokenIdentity,
    create_token,
    list_tokens,
    require_roles,
    revoke_token,
)
from web.tokens import ApiToken, Role, hash_token
from tests.test_web_support import app, bearer, client, services, tokens  # noqa: F401 (fixtures)

probe = Blueprint("probe", __name__, url_prefix="/probe")


@probe.get("/staff")
@require_roles(Role.admin, Role.supervisor, Role.agent)
def staff_only():
    return jsonify(asdict(g.caller_token))


@probe.get("/admin")
@require_roles("admin")
def admin_only():
    return jsonify(asdict(g.caller_token))


@probe.get("/departments")
@require_roles(Role.department)
def departments_only():
    return jsonify(asdict(g.caller_token))


@pytest.fixture
def probe_client(app):  # noqa: F811
    app.register_blueprint(probe)
    return app.test_client()


# --- the decorator over HTTP ---------------------------------------------------------------------------

def _assert_401(response):
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["error"] == "unauthorized"
    assert response.json["message"]


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer two words", "Token abc", "Bearer \u4e2d\u6587"],
)
def test_missing_or_malformed_header_is_401(probe_client, header):
    headers = {} if header is None else {"Authorization": header}
    _assert_401(probe_client.get("/probe/staff", headers=headers))


def test_unknown_token_is_401(probe_client, tokens):  # noqa: F811
    response = probe_client.get("/probe/staff", headers=bearer("hl_" + "x" * 43))
    _assert_401(response)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_scheme_is_case_insensitive(probe_client, tokens):  # noqa: F811
    response = probe_client.get("/probe/staff", headers={"Authorization": "bearer " + tokens["agent"]})
    assert response.status_code == 200


@pytest.mark.parametrize("role", ["admin", "supervisor", "agent"])
def test_staff_roles_pass_and_see_their_identity(probe_client, tokens, role):  # noqa: F811
    response = probe_client.get("/probe/staff", headers=bearer(tokens[role]))
    assert response.status_code == 200
    assert response.json == {"name": f"test-{role}", "role": role, "department": None, "agent": None}


def test_department_token_carries_its_department(probe_client, tokens):  # noqa: F811
    response = probe_client.get("/probe/departments", headers=bearer(tokens["dept:water"]))
    assert response.status_code == 200
    assert response.json == {"name": "test-dept-water", "role": "department", "department": "water", "agent": None}


def test_an_agent_token_carries_its_agents_code(probe_client, session_factory):  # noqa: F811
    token = create_token(session_factory, "li-desk", Role.agent, agent="1001")
    response = probe_client.get("/probe/staff", headers=bearer(token))
    assert response.json == {"name": "li-desk", "role": "agent", "department": None, "agent": "1001"}


@pytest.mark.parametrize("role, agent, problem", [("supervisor", "1001", "only an agent token"),
                                                  ("agent", "10 01", "1 to 20 letters or digits"),
                                                  ("agent", "x" * 21, "1 to 20 letters or digits")])
def test_only_agent_tokens_name_an_agent_and_only_a_well_formed_code(session_factory, role, agent, problem):
    with pytest.raises(TokenError, match=problem):
        create_token(session_factory, "t", Role(role), agent=agent)


@pytest.mark.parametrize(
    "path,role",
    [("/probe/staff", "dept:water"), ("/probe/admin", "agent"), ("/probe/admin", "supervisor"),
     ("/probe/departments", "admin")],
)
def test_wrong_role_is_403(probe_client, tokens, path, role):  # noqa: F811
    response = probe_client.get(path, headers=bearer(tokens[role]))
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert "WWW-Authenticate" not in response.headers


def test_revoked_token_is_401(probe_client, tokens, session_factory):  # noqa: F811
    assert probe_client.get("/probe/admin", headers=bearer(tokens["admin"])).status_code == 200
    revoke_token(session_factory, tokens["admin"])
    _assert_401(probe_client.get("/probe/admin", headers=bearer(tokens["admin"])))
    # The other tokens are untouched.
    assert probe_client.get("/probe/staff", headers=bearer(tokens["agent"])).status_code == 200


def test_require_roles_rejects_bad_declarations():
    with pytest.raises(TypeError):
        require_roles()
    with pytest.raises(ValueError):
        require_roles("root")


# --- the cache -----------------------------------------------------------------------------------------

def test_cache_keeps_a_token_for_its_ttl_only(session_factory):
    now = [1000.0]
    auth = TokenAuthenticator(session_factory, ttl=5.0, clock=lambda: now[0])
    token = create_token(session_factory, "cached", "agent")
    assert auth.identify(token) == TokenIdentity("cached", Role.agent, None)
    revoke_token(session_factory, "cached")
    now[0] += 4.0
    assert auth.identify(token) is not None  # still cached: the documented revocation delay
    now[0] += 1.5
    assert auth.identify(token) is None
    assert auth.identify("hl_never-issued") is None


def test_forget_drops_cached_tokens(session_factory):
    auth = TokenAuthenticator(session_factory, ttl=60.0)
    token = create_token(session_factory, "cached", "supervisor")
    assert auth.identify(token) is not None
    revoke_token(session_factory, token)
    auth.forget()
    assert auth.identify(token) is None


# --- token management ----------------------------------------------------------------------------------

def test_token_is_stored_only_as_its_hash(session_factory):
    token = create_token(session_factory, "ops", Role.admin)
    assert token.startswith("hl_")
    with session_factory() as session:
        rows = session.scalars(select(ApiToken)).all()
    assert [row.token_hash for row in rows] == [hash_token(token)]
    assert all(token not in str(value) for row in rows for value in vars(row).values())


@pytest.mark.parametrize(
    "role,department",
    [("department", None), ("department", "  "), ("admin", "water"), ("agent", ""), ("root", None)],
)
def test_create_token_checks_role_and_department(session_factory, role, department):
    with pytest.raises(TokenError):
        create_token(session_factory, "t", role, department)
    assert list_tokens(session_factory) == []


def test_create_token_needs_a_name(session_factory):
    with pytest.raises(TokenError):
        create_token(session_factory, "  ", "admin")
    with pytest.raises(TokenError):
        create_token(session_factory, "n" * 101, "admin")


def test_active_names_are_unique_and_free_again_after_revoking(session_factory):
    create_token(session_factory, "water desk", "department", "water")
    with pytest.raises(TokenError):
        create_token(session_factory, "water desk", "agent")
    revoke_token(session_factory, "water desk")
    create_token(session_factory, "water desk", "department", "water")
    assert [(t.name, t.active) for t in list_tokens(session_factory)] == [("water desk", False), ("water desk", True)]


def test_revoke_by_token_or_name_and_list(session_factory):
    first = create_token(session_factory, "first", "agent")
    create_token(session_factory, "second", "department", "police")
    info = revoke_token(session_factory, first)
    assert (info.name, info.role, info.active) == ("first", Role.agent, False)
    info = revoke_token(session_factory, "second")
    assert (info.name, info.department) == ("second", "police")
    listed = list_tokens(session_factory)
    assert [(t.name, t.role, t.department) for t in listed] == [
        ("first", Role.agent, None), ("second", Role.department, "police")]
    assert all(t.revoked_at is not None and t.created_at is not None for t in listed)
    assert not any(hasattr(t, "token_hash") for t in listed)


def test_revoking_nothing_is_an_error_that_does_not_echo_the_token(session_factory):
    token = create_token(session_factory, "once", "agent")
    revoke_token(session_factory, token)
    with pytest.raises(TokenError) as caught:
        revoke_token(session_factory, token)
    assert token not in str(caught.value)
    with pytest.raises(TokenError):
        revoke_token(session_factory, "nobody")
