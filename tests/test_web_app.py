"""The application factory: services wiring and the JSON error format."""

from __future__ import annotations

import logging

import pytest
from flask import Blueprint, Flask

import web.app
from web.app import create_app
from web.errors import ApiError
from tests.test_web_support import app, client, services  # noqa: F401 (fixtures)

PHONE = "13912345678"

boom = Blueprint("boom", __name__, url_prefix="/boom")


@boom.get("/crash")
def crash():
    raise RuntimeError(f"database said: duplicate caller {PHONE}")


@boom.get("/refuse")
def refuse():
    raise ApiError(409, "conflict", "the ticket was changed meanwhile")


def _is_error_body(response, status, code=None):
    assert response.status_code == status
    assert response.is_json
    body = response.json
    assert set(body) == {"error", "message"}
    assert body["message"] and isinstance(body["message"], str)
    if code:
        assert body["error"] == code


def test_no_app_object_at_import_time():
    assert not any(isinstance(value, Flask) for value in vars(web.app).values())


def test_services_live_in_extensions(app, services):  # noqa: F811
    assert app.extensions["hotline"] is services


def test_two_apps_in_one_process(services):  # noqa: F811
    # Blueprints and metrics are defined once; building the app again must not clash.
    first, second = create_app(services), create_app(services)
    assert first is not second
    assert second.test_client().get("/metrics").status_code == 200


def test_unknown_path_is_json_404(client):  # noqa: F811
    _is_error_body(client.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_json_405_with_allow(client):  # noqa: F811
    response = client.delete("/health")
    _is_error_body(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_api_error_keeps_its_status_and_code(app):  # noqa: F811
    app.register_blueprint(boom)
    _is_error_body(app.test_client().get("/boom/refuse"), 409, "conflict")


def test_crash_is_json_500_without_trace_or_number(app, caplog):  # noqa: F811
    app.register_blueprint(boom)
    with caplog.at_level(logging.ERROR, logger="web.app"):
        response = app.test_client().get("/boom/crash")
    _is_error_body(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert PHONE not in text and "Traceback" not in text and "RuntimeError" not in text
    # The log names the failure and where, but not the exception's text.
    assert "RuntimeError" in caplog.text and "crash" in caplog.text
    assert PHONE not in caplog.text


@pytest.mark.parametrize("path", ["/api/openapi.json", "/health", "/metrics"])
def test_public_endpoints_answer_head(client, path):  # noqa: F811
    assert client.head(path).status_code == 200
