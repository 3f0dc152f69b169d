"""Shared fixtures: real PostgreSQL and Redis from the machine, SQLite files in tmp dirs.

``HOTLINE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
``HOTLINE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) name the servers; set
``HOTLINE_TEST_BACKENDS=sqlite`` to run the storage tests on SQLite only.
Each test gets its own PostgreSQL schema and its own Redis key prefix, so parallel runs don't meet.
"""

from __future__ import annotations

import logging

import os
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import text

from base.db import Base, make_engine, make_session_factory

POSTGRES_URL = os.environ.get("HOTLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HOTLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b for b in os.environ.get("HOTLINE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]


def _import_models() -> None:
    """Import every module that defines tables, so Base.metadata is complete."""
    import web.tokens  # noqa: F401
    try:
        import orders.models  # noqa: F401
        import virtual_numbers.models  # noqa: F401
        import queues.agents  # noqa: F401
        import queues.callbacks  # noqa: F401
    except ImportError:  # pragma: no cover - while orders is being written
        pass


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A URL to an empty database: a fresh SQLite file, or a fresh schema in the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hotline.db'}"
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def engine(database_url):
    _import_models()
    eng = make_engine(database_url)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def redis_conn():
    """The machine's real Redis; keys this test makes carry a unique prefix and are removed after."""
    conn = redis_lib.Redis.from_url(REDIS_URL)
    conn.ping()
    yield conn
    conn.close()


@pytest.fixture
def redis_down():
    """A client of a Redis that is not there, failing at once (no retries) to keep the tests quick."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tests.servers import free_port

    client = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5,
                             retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_conn):
    prefix = "test:" + uuid.uuid4().hex[:10] + ":"
    yield prefix
    for key in redis_conn.scan_iter(prefix + "*"):
        redis_conn.delete(key)


@pytest.fixture(autouse=True)
def _no_log_redaction():
    """Each test starts without the global log redaction (a CLI test installs it for the process), so a
    test that searches logs for a caller's number checks the code that logs, not the safety net."""
    from hotline.logs import uninstall_redaction  # here: conftest must import nothing heavy before collection

    uninstall_redaction()
    yield
    uninstall_redaction()


@pytest.fixture
def hotline_cli(tmp_path):
    """Run ``hotline ...`` as an operator would, on the embedded default under a data dir of its own."""
    from click.testing import CliRunner

    from hotline.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    env = {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_DATABASE_URL": "", "HOTLINE_REDIS_URL": "",
           "HOTLINE_CONFIG": "", "HOTLINE_LOG_LEVEL": "WARNING"}

    def invoke(*args):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    yield invoke
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def agi_handler_server():
    """``start(name, handler)``: a FastAGI server for one handler on a free loopback port; its address.
    Every server started is shut down at the end of the test."""
    from tests.agi_fixtures import handler_servers  # here: conftest must import nothing heavy before collection

    yield from handler_servers()
