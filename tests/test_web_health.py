"""GET /health on the real database and Redis, and when a dependency is down."""

from __future__ import annotations

import json

from config import load_settings
from base.db import make_engine, make_session_factory
from hotline.services import Services
from web.app import create_app
from tests.test_web_support import app, client, closed_port, services  # noqa: F401 (fixtures)


def test_ok_on_real_database_and_redis(client):  # noqa: F811
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}}}
    assert response.headers["Cache-Control"] == "no-store"


def test_needs_no_token(client):  # noqa: F811
    assert client.get("/health", headers={"Authorization": "Bearer nonsense"}).status_code == 200


def test_degraded_when_redis_is_down(tmp_path, database_url, engine, session_factory):
    port = closed_port()
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url,
                             redis_url=f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    services = Services(settings=settings, engine=engine, session_factory=session_factory)  # noqa: F811
    response = create_app(services).test_client().get("/health")
    assert response.status_code == 503
    body = response.json
    assert body["status"] == "degraded"
    assert body["failing"] == ["redis"]
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["redis"]["status"] == "failed"
    text = response.get_data(as_text=True)
    assert str(port) not in text and "s3cret" not in text and "127.0.0.1" not in text
    # The check used the configured client, not an embedded server of its own.
    assert not (tmp_path / "redis.db").exists()


def test_degraded_when_database_is_down(tmp_path, redis_conn):
    port = closed_port()
    url = f"postgresql://hotline:db-pw-123@127.0.0.1:{port}/hotline"
    engine = make_engine(url)
    try:
        settings = load_settings(environ={}, data_dir=tmp_path, database_url=url)
        services = Services(settings=settings, engine=engine, session_factory=make_session_factory(engine),  # noqa: F811
                            _redis=redis_conn)
        response = create_app(services).test_client().get("/health")
    finally:
        engine.dispose()
    assert response.status_code == 503
    body = json.loads(response.get_data(as_text=True))
    assert body["failing"] == ["database"]
    assert body["checks"]["redis"] == {"status": "ok"}
    text = response.get_data(as_text=True)
    assert "db-pw-123" not in text and str(port) not in text and "postgresql" not in text
