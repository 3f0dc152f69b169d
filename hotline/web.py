"""The Flask application factory: wires the blueprints, JSON errors and request metrics to one Services."""

from __future__ import annotations

import logging
import time
import traceback

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from hotline import metrics

__all__ = ["ApiError", "create_app", "error_response"]

log = logging.getLogger(__name__)

#: The error code and client message for each HTTP error raised outside our own views.
_HTTP_ERRORS = {
    400: ("bad_request", "the request could not be understood"),
    401: ("unauthorized", "this endpoint needs a valid bearer token"),
    403: ("forbidden", "this token may not use this endpoint"),
    404: ("not_found", "there is no such endpoint"),
    405: ("method_not_allowed", "this endpoint does not accept that HTTP method"),
    413: ("payload_too_large", "the request body is too large"),
    415: ("unsupported_media_type", "the request body must be JSON"),
    500: ("internal_error", "the server failed to answer; the failure has been logged"),
}


class ApiError(Exception):
    """An error answer for an API client: HTTP status, a stable code and a clear message.

    The message is shown to the client as is: it must never hold a phone number or internals.
    """

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, error: str, message: str, headers=None) -> Response:
    """The JSON body every error of the API has: ``{"error": code, "message": text}``."""
    response = jsonify({"error": error, "message": message})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _on_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.headers)


def _on_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    error, message = _HTTP_ERRORS.get(status, (exc.name.lower().replace(" ", "_"), exc.name))
    # Keep what werkzeug adds for the protocol (Allow on a 405), not its HTML content type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(status, error, message, headers)


def _on_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _on_http_exception(exc)
    # Frames only: an exception's text (e.g. a database error's bound parameters) can hold a caller number.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled %s in %s %s\n%s", type(exc).__name__, request.method, _endpoint_label(), frames)
    error, message = _HTTP_ERRORS[500]
    return error_response(500, error, message)


# --- request metrics and /metrics ---------------------------------------------------------------------

def _http_requests():
    return metrics.counter("hotline_http_requests_total", "HTTP requests answered, by endpoint and status.",
                           ("endpoint", "method", "status"))


def _http_latency():
    return metrics.histogram("hotline_http_request_duration_seconds", "Time to answer an HTTP request.",
                             ("endpoint",), buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def _endpoint_label() -> str:
    # The URL rule, not the path: one series per route, however many ticket numbers are asked for.
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _start_timer() -> None:
    g.hotline_request_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("hotline_request_started", None)
    endpoint = _endpoint_label()
    _http_requests().labels(endpoint, request.method, str(response.status_code)).inc()
    if started is not None:
        _http_latency().labels(endpoint).observe(time.perf_counter() - started)
    return response


metrics_bp = Blueprint("metrics", __name__)


@metrics_bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus scrape endpoint (text exposition format) for every metric of this process."""
    body, content_type = metrics.exposition()
    return Response(body, status=200, content_type=content_type)


def create_app(services, *, token_cache_ttl: float = 5.0) -> Flask:
    """A WSGI app serving the hotline API over ``services`` (a :class:`hotline.services.Services`).

    ``token_cache_ttl``: seconds a checked token is trusted without asking the database again, so the
    longest a revoked token keeps working in a running process; 0 turns the cache off.
    """
    # Imported here: these modules import ApiError from this one.
    from hotline import health, openapi
    from hotline.auth import TokenAuthenticator
    from orders import api as tickets_api

    app = Flask(__name__, static_folder=None)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["hotline"] = services
    app.extensions["hotline.auth"] = TokenAuthenticator(services.session_factory, ttl=token_cache_ttl)

    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(HTTPException, _on_http_exception)
    app.register_error_handler(Exception, _on_unexpected)

    _http_requests()
    _http_latency()
    app.before_request(_start_timer)
    app.after_request(_record)

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(tickets_api.bp)
    return app
