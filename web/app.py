"""The Flask application factory: wires the blueprints, JSON errors and request metrics to one Services."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from base import metrics
from web import cases, departments, health, openapi, tickets
from web.auth import TokenAuthenticator
from web.errors import endpoint_label, register_error_handlers
from web import pages
from web import queues
from web import virtual
from web.wallboard import watch_queue_metrics

__all__ = ["create_app", "shutdown"]

log = logging.getLogger(__name__)

# --- request metrics and /metrics ---------------------------------------------------------------------

def _http_requests():
    return metrics.counter("hotline_http_requests_total", "HTTP requests answered, by endpoint and status.",
                           ("endpoint", "method", "status"))


def _http_latency():
    return metrics.histogram("hotline_http_request_duration_seconds", "Time to answer an HTTP request.",
                             ("endpoint",), buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def _start_timer() -> None:
    g.hotline_request_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("hotline_request_started", None)
    endpoint = endpoint_label()
    _http_requests().labels(endpoint, request.method, str(response.status_code)).inc()
    if started is not None:
        _http_latency().labels(endpoint).observe(time.perf_counter() - started)
    return response


def _refuse_large_bodies() -> None:
    # MAX_CONTENT_LENGTH only acts when a view reads the body; this refuses a declared oversized body at
    # once, whatever the endpoint (JSON 413 through the error handlers, never werkzeug's HTML page).
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


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

    app = Flask(__name__, static_folder=None)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = services.settings.web_max_body_bytes
    app.extensions["hotline"] = services
    app.extensions["web.auth"] = TokenAuthenticator(services.session_factory, ttl=token_cache_ttl)
    app.secret_key = pages.session_secret(services.settings.data_dir)  # signs the desk pages' sessions

    register_error_handlers(app)

    _http_requests()
    _http_latency()
    app.before_request(_start_timer)
    app.before_request(_refuse_large_bodies)
    app.after_request(_record)

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(tickets.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(departments.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(virtual.bp)
    app.register_blueprint(queues.bp)
    watch_queue_metrics(services)  # the live queue figures, read from Redis at each scrape of /metrics
    return app


def shutdown(app: Flask) -> None:
    """End the app's live streams and their Redis listener; call it when the server stops."""
    queues.close_live(app)
