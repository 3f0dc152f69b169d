"""Fixtures shared by the tests/test_web_*.py suites (imported by name; this module has no tests)."""

from __future__ import annotations

import pytest

from config import load_settings
from web.auth import create_token
from hotline.services import Services
from web.app import create_app
from tests.servers import free_port

DEPARTMENTS = ("water", "police")


#: A loopback port nothing listens on: one the OS had free a moment ago (good enough for a test run).
closed_port = free_port


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def services(tmp_path, database_url, engine, session_factory, redis_conn):
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url)
    return Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)


@pytest.fixture
def app(services):
    # No token cache: a test that revokes a token sees it refused on the next request.
    return create_app(services, token_cache_ttl=0)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(session_factory) -> dict[str, str]:
    """One clear token per role, and one per department ("dept:water", "dept:police")."""
    made = {role: create_token(session_factory, f"test-{role}", role) for role in ("admin", "supervisor", "agent")}
    for name in DEPARTMENTS:
        made[f"dept:{name}"] = create_token(session_factory, f"test-dept-{name}", "department", name)
    return made


# --- checking answers against hotline/openapi.yaml ------------------------------------------------------
# No JSON Schema library is installed; this checks the subset of keywords openapi.yaml uses, and fails
# on any other keyword so the spec cannot silently outgrow it.

_CHECKED = {"type", "enum", "required", "properties", "additionalProperties", "items", "$ref", "oneOf",
            "pattern", "minimum", "maximum", "maxLength", "format", "description", "examples", "default"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def resolve(spec: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _type_ok(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("object", "array", "string", "null"):
        return isinstance(value, _TYPES[name])
    return isinstance(value, bool) if name == "boolean" else False


def schema_errors(spec: dict, schema: dict, value, where: str = "$") -> list[str]:
    """Why ``value`` does not match ``schema`` (empty when it does)."""
    import re

    unknown = set(schema) - _CHECKED
    assert not unknown, f"schema keyword(s) {unknown} at {where} are not checked by this test helper"
    if "$ref" in schema:
        return schema_errors(spec, resolve(spec, schema["$ref"]), value, where)
    errors: list[str] = []
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not schema_errors(spec, s, value, where)]
        if len(matching) != 1:
            errors.append(f"{where}: matches {len(matching)} of oneOf")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            return [f"{where}: {value!r} is not {names}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if schema.get("format") == "date-time":
            from datetime import datetime

            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{where}: {value!r} is not a date-time")
            else:
                if parsed.tzinfo is None:
                    errors.append(f"{where}: {value!r} has no offset")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: above {schema['maximum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing {name}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(spec, properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected {name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(spec, schema["items"], item, f"{where}[{index}]")
    return errors


def assert_matches_spec(response, path: str, method: str = "get") -> None:
    """The response's status is documented for this operation and its JSON body matches the schema."""
    from web.openapi import spec as load_spec

    spec = load_spec()
    operation = spec["paths"][path][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method.upper()} {path} does not document status {response.status_code}"
    if "$ref" in documented:
        documented = resolve(spec, documented["$ref"])
    content = documented["content"]
    assert "application/json" in content, content
    errors = schema_errors(spec, content["application/json"]["schema"], response.get_json())
    assert not errors, errors
