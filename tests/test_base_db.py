"""base.db.make_engine: every wait on the database is bounded (a hung server is the TcpProxy holding)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from base.db import make_engine
from tests.orders_fixtures import pg_proxy, postgres_only, run_bounded, sqlite_only  # noqa: F401


@postgres_only
def test_postgres_sessions_carry_timeouts_and_keep_the_urls_options(database_url, engine):
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "10s"
        assert conn.execute(text("SHOW search_path")).scalar().startswith("t_")  # the URL's options kept
        params = conn.connection.dbapi_connection.info.get_parameters()
        assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) > 0
        assert 2 <= int(params["connect_timeout"]) <= 10
    assert engine.pool.timeout() <= 10
    custom = make_engine(database_url, statement_timeout=2.5)
    try:
        with custom.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "2500ms"
    finally:
        custom.dispose()
    unbounded = make_engine(database_url, statement_timeout=None)  # e.g. migrations
    try:
        with unbounded.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        unbounded.dispose()


@postgres_only
def test_a_silent_server_fails_statements_and_connections_in_bounded_time(pg_proxy, database_url):
    proxy, _ = pg_proxy
    engine = make_engine(proxy.url_for(database_url), statement_timeout=1, io_timeout=1, connect_timeout=2,
                         pool_timeout=1)
    try:
        conn = engine.connect()
        assert conn.execute(text("SELECT 1")).scalar() == 1
        proxy.hold()  # the server stops answering: accepted, silent; TCP itself stays healthy
        with pytest.raises(sa_exc.OperationalError, match="did not answer within 1 s"):
            run_bounded(lambda: conn.execute(text("SELECT 2")))
        assert conn.invalidated
        conn.close()
        with pytest.raises(sa_exc.OperationalError):  # a new connection: the connect timeout
            run_bounded(lambda: engine.connect().close())
        proxy.release()
        with engine.connect() as again:  # the server answers again: a fresh connection works
            assert again.execute(text("SELECT 3")).scalar() == 3
    finally:
        proxy.release()
        engine.dispose()


@postgres_only
def test_a_slow_statement_is_cancelled_by_the_server(database_url, engine):
    quick = make_engine(database_url, statement_timeout=0.2)
    try:
        with quick.connect() as conn:
            with pytest.raises(sa_exc.OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(5)"))
    finally:
        quick.dispose()


@sqlite_only
def test_sqlite_waits_for_a_lock_a_bounded_time(engine):
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert engine.pool.timeout() <= 10
