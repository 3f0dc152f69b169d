"""The departments API: departments, their call-back phones, the dispatch catalogue and the lateness ranking.

Every token reads the departments (a department's phones are its own desk numbers, not citizens'); only
an admin changes them. Staff read the catalogue; an admin or a supervisor changes its rules. The overdue
ranking is for the hotline's staff.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from flask import Blueprint, current_app, jsonify, request, url_for

from web.auth import require_roles
from web.cases import json_object
from web.errors import ApiError
from web.tickets import ALL_ROLES, iso, private_answer, storage_error
from web.tokens import Role
from orders.cases import valid_code
from orders.cases import CatalogueRule
from orders.departments import DepartmentError, DepartmentNotFound, DepartmentView
from orders.errors import StorageError
from orders.snapshot import CONTROL_CHARACTERS
from base.vocabulary import HOTLINE_TZ

bp = Blueprint("departments", __name__, url_prefix="/api")
bp.register_error_handler(StorageError, storage_error)
bp.after_request(private_answer)

STAFF = (Role.admin, Role.supervisor, Role.agent)
#: Paths under /api/departments that are not a department's code.
RESERVED_CODES = frozenset({"ranking"})
_CREATE_FIELDS = {"code", "name_zh", "name_en", "parent_code"}
_CHANGE_FIELDS = {"name_zh", "name_en", "parent_code", "active"}
_RULE_FIELDS = {"lead", "supporting", "kind", "answer_days"}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _store():
    return current_app.extensions["hotline"].departments


def _only(body: dict, known: set[str]) -> dict:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)[:200]}; "
                                            f"the fields are {', '.join(sorted(known))}")
    return body


def _refused(exc: DepartmentError) -> ApiError:
    return ApiError(400, "invalid_department", str(exc))


def _not_found() -> ApiError:
    return ApiError(404, "department_not_found", "no department has that code")


def _department_json(department: DepartmentView) -> dict:
    return {"code": department.code, "name_zh": department.name_zh, "name_en": department.name_en,
            "parent_code": department.parent_code, "active": department.active, "phones": list(department.phones)}


def _existing(code: str) -> DepartmentView:
    if not valid_code(code):  # no query for what cannot be a code (a NUL would fail the database)
        raise _not_found()
    try:
        return _store().get(code)
    except DepartmentNotFound:
        raise _not_found() from None


# --- departments -------------------------------------------------------------------------------------

@bp.get("/departments")
@require_roles(*ALL_ROLES)
def list_departments():
    """Departments by code; ``include_inactive=true`` lists the retired ones too."""
    flag = request.args.get("include_inactive", "false")
    if flag not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", "include_inactive: must be true or false")
    departments = _store().list(include_inactive=flag == "true")
    return jsonify({"items": [_department_json(d) for d in departments]})


@bp.post("/departments")
@require_roles(Role.admin)
def create_department():
    """A new department: code, names in Mandarin and English, an optional parent."""
    body = _only(json_object(), _CREATE_FIELDS)
    code = body.get("code")
    if isinstance(code, str) and code in RESERVED_CODES:
        raise ApiError(400, "invalid_department", f"{code} is a path of this API, not a department code")
    if valid_code(code) and _known(code):
        raise ApiError(409, "department_exists", f"department {code} exists already")
    try:
        department = _store().create(code, body.get("name_zh"), body.get("name_en"), body.get("parent_code"))
    except DepartmentNotFound:
        raise ApiError(400, "invalid_department", "parent_code: no department has that code") from None
    except DepartmentError as exc:
        raise _refused(exc) from None
    response = jsonify(_department_json(department))
    response.status_code = 201
    response.headers["Location"] = url_for(".get_department", code=department.code)
    return response


def _known(code: str) -> bool:
    try:
        _store().get(code)
    except DepartmentNotFound:
        return False
    return True


@bp.get("/departments/<code>")
@require_roles(*ALL_ROLES)
def get_department(code: str):
    """One department with its phones."""
    return jsonify(_department_json(_existing(code)))


@bp.patch("/departments/<code>")
@require_roles(Role.admin)
def change_department(code: str):
    """Rename a department, move it under another, or retire (``active: false``) or restore it."""
    body = _only(json_object(), _CHANGE_FIELDS)
    if "active" in body and not isinstance(body["active"], bool):
        raise ApiError(400, "invalid_department", "active must be true or false")
    _existing(code)
    try:
        department = _store().update(code, **{name: body.get(name) for name in _CHANGE_FIELDS})
    except DepartmentNotFound:
        raise ApiError(400, "invalid_department", "parent_code: no department has that code") from None
    except DepartmentError as exc:
        raise _refused(exc) from None
    return jsonify(_department_json(department))


@bp.post("/departments/<code>/phones")
@require_roles(Role.admin)
def add_phone(code: str):
    """Let a number of the department call citizens back (201; 200 when it had it already)."""
    body = _only(json_object(), {"number", "label"})
    number, label = body.get("number"), body.get("label") or ""
    if not isinstance(number, str) or not isinstance(label, str):
        raise ApiError(400, "invalid_department", "number and label must be text")
    before = _existing(code)
    try:
        after = _store().add_phone(code, number, label)
    except DepartmentNotFound:
        raise _not_found() from None
    except DepartmentError as exc:
        raise _refused(exc) from None
    response = jsonify(_department_json(after))
    response.status_code = 201 if set(after.phones) - set(before.phones) else 200
    return response


@bp.delete("/departments/<code>/phones/<e164>")
@require_roles(Role.admin)
def remove_phone(code: str, e164: str):
    """Stop a number calling citizens back for the department."""
    before = _existing(code)
    try:
        after = _store().remove_phone(code, e164)
    except DepartmentNotFound:
        raise _not_found() from None
    except DepartmentError as exc:
        raise _refused(exc) from None
    if after.phones == before.phones:
        raise ApiError(404, "phone_not_found", "the department has no such phone")
    return jsonify(_department_json(after))


# --- the dispatch catalogue --------------------------------------------------------------------------

def _rule_json(rule: CatalogueRule) -> dict:
    return {"category": rule.category, "district": rule.district or None, "kind": rule.kind, "lead": rule.lead,
            "supporting": list(rule.supporting), "answer_days": rule.answer_days}


def _district() -> str:
    district = request.args.get("district", "").strip()
    if CONTROL_CHARACTERS.search(district):
        raise ApiError(400, "invalid_parameter", "district: must not contain control characters")
    return district


def _category(category: str) -> str:
    if CONTROL_CHARACTERS.search(category):
        raise ApiError(400, "invalid_parameter", "category: must not contain control characters")
    return category


@bp.get("/catalogue")
@require_roles(*STAFF)
def list_rules():
    """The dispatch catalogue, by category then district."""
    return jsonify({"items": [_rule_json(rule) for rule in _store().rules()]})


@bp.put("/catalogue/<category>")
@require_roles(Role.admin, Role.supervisor)
def put_rule(category: str):
    """Create or replace the rule for ``category`` (in ``?district=``, else anywhere)."""
    body = _only(json_object(), _RULE_FIELDS)
    supporting = body.get("supporting") or []
    if not isinstance(supporting, list) or not all(isinstance(code, str) for code in supporting):
        raise ApiError(400, "invalid_rule", "supporting must be a list of department codes")
    try:
        rule = _store().put_rule(_category(category), body.get("lead"), district=_district(), kind=body.get("kind") or "help",
                                 supporting=supporting, answer_days=body.get("answer_days"))
    except DepartmentError as exc:
        raise ApiError(400, "invalid_rule", str(exc)) from None
    return jsonify(_rule_json(rule))


@bp.delete("/catalogue/<category>")
@require_roles(Role.admin, Role.supervisor)
def delete_rule(category: str):
    """Drop the rule for ``category`` (in ``?district=``, else the one for anywhere)."""
    if not _store().delete_rule(_category(category), _district()):
        raise ApiError(404, "rule_not_found", "the catalogue has no rule for that category and district")
    return "", 204


# --- lateness ----------------------------------------------------------------------------------------

def _day(name: str, required: bool) -> date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        if required:
            raise ApiError(400, "invalid_parameter", f"{name}: required, a date like 2024-05-01")
        return None
    try:
        if _DATE.fullmatch(raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise ApiError(400, "invalid_parameter", f"{name}: must be a date like 2024-05-01")


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=HOTLINE_TZ)


@bp.get("/departments/ranking")
@require_roles(*STAFF)
def ranking():
    """Departments by lateness from ``since`` to ``until`` (local days, both included; until: today)."""
    since = _day("since", required=True)
    until = _day("until", required=False) or datetime.now(HOTLINE_TZ).date()
    if until < since:
        raise ApiError(400, "invalid_parameter", "until: must not be before since")
    start, end = _local_midnight(since), _local_midnight(until + timedelta(days=1))
    rows = current_app.extensions["hotline"].casework.overdue_ranking(start, end)
    names = {d.code: d for d in _store().list(include_inactive=True)}
    return jsonify({"since": iso(start), "until": iso(end), "items": [{
        "department": row.department,
        "name_zh": names[row.department].name_zh if row.department in names else None,
        "name_en": names[row.department].name_en if row.department in names else None,
        "overdue_open": row.overdue_open,
        "overdue_total": row.overdue_total,
        "dispatched": row.dispatched,
    } for row in rows]})
