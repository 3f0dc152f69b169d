"""The application factory: services wiring and the JSON error format."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import threading

import pytest
import waitress
from flask import Blueprint, Flask, request

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


# --- request bodies are capped (web_max_body_bytes) ----------------------------------------------------

echo = Blueprint("echo", __name__, url_prefix="/echo")


@echo.post("")
def echo_json():
    return {"size": len(request.get_json(force=True)["data"])}


def test_the_body_limit_comes_from_the_settings(app, services):  # noqa: F811
    assert services.settings.web_max_body_bytes == 1024 * 1024
    assert app.config["MAX_CONTENT_LENGTH"] == services.settings.web_max_body_bytes


@pytest.mark.parametrize("method,path", [
    ("post", "/api/tickets"),  # no POST here: the body is refused before the method is looked at
    ("put", "/health"),
    ("get", "/api/tickets"),
    ("post", "/nowhere"),
])
def test_an_oversized_body_is_json_413_on_any_endpoint(client, method, path):  # noqa: F811
    response = getattr(client, method)(path, data=b"x" * (1024 * 1024 + 1), content_type="application/json")
    _is_error_body(response, 413, "payload_too_large")
    assert "<html" not in response.get_data(as_text=True).lower()


def test_a_body_within_the_limit_is_not_refused_for_its_size(client):  # noqa: F811
    response = client.post("/api/tickets", data=b"x" * (1024 * 1024), content_type="application/json")
    _is_error_body(response, 405, "method_not_allowed")


def test_a_chunked_body_over_the_limit_is_json_413_through_waitress(services):  # noqa: F811
    # A chunked body has no Content-Length until the server has read it: waitress sets one, so the
    # limit holds for it too. This runs the real server on a loopback port.
    services.settings = dataclasses.replace(services.settings, web_max_body_bytes=1000)
    app = create_app(services)
    app.register_blueprint(echo)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        answers = []
        for size in (100, 5000):
            body = json.dumps({"data": "x" * size}).encode()
            conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
            conn.request("POST", "/echo", body=iter([body[:500], body[500:]]), encode_chunked=True,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answers.append((response.status, response.getheader("Content-Type"), json.loads(response.read())))
            conn.close()
    finally:
        # Closed from the server's own loop thread: closing it from here races its select() (EBADF).
        server.trigger.pull_trigger(server.close)
        thread.join(10)
        server.task_dispatcher.shutdown()
    assert not thread.is_alive()
    assert answers[0] == (200, "application/json", {"size": 100})
    status, content_type, body = answers[1]
    assert (status, content_type) == (413, "application/json")
    assert body["error"] == "payload_too_large" and set(body) == {"error", "message"}
