"""The API's error answers: one JSON shape for every error, whoever raises it."""

from __future__ import annotations

import logging
import traceback

from flask import Response, jsonify, request
from werkzeug.exceptions import HTTPException

__all__ = ["ApiError", "error_response", "register_error_handlers"]

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
    log.error("unhandled %s in %s %s\n%s", type(exc).__name__, request.method, endpoint_label(), frames)
    error, message = _HTTP_ERRORS[500]
    return error_response(500, error, message)



def endpoint_label() -> str:
    """The URL rule, not the path: one metrics series and log label per route, whatever numbers are asked for."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def register_error_handlers(app) -> None:
    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(HTTPException, _on_http_exception)
    app.register_error_handler(Exception, _on_unexpected)
