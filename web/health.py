"""``GET /health``: is this web process able to reach its database and Redis?"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


def _check_database(services) -> None:
    with services.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def _check_redis(services) -> None:
    # services.redis connects on first use; the health check opens nothing of its own.
    if not services.redis.ping():
        raise ConnectionError("Redis did not answer PING")


CHECKS = {"database": _check_database, "redis": _check_redis}


@bp.get("/health")
def health():
    """200 when every dependency answers, else 503 naming the failing ones (no URLs, no passwords)."""
    services = current_app.extensions["hotline"]
    checks: dict[str, dict[str, str]] = {}
    for name, check in CHECKS.items():
        try:
            check(services)
        except Exception as exc:  # any failure of a dependency is a "degraded" answer, not a 500
            # Only the exception's type reaches the client: driver messages can hold hosts or DSNs.
            log.warning("health check %s failed: %s", name, type(exc).__name__)
            checks[name] = {"status": "failed", "reason": type(exc).__name__}
        else:
            checks[name] = {"status": "ok"}
    failing = sorted(name for name, result in checks.items() if result["status"] != "ok")
    body = {"status": "degraded" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    response = jsonify(body)
    response.status_code = 503 if failing else 200
    response.headers["Cache-Control"] = "no-store"
    return response
