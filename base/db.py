"""SQLAlchemy engine, sessions and the declarative base shared by every domain package.

Every engine made here is bounded in time, so that a database that stops answering (a hung server, a
host that drops packets) fails a caller's ticket save in seconds instead of holding it for ever:

* connecting: ``connect_timeout`` (PostgreSQL) or the busy timeout (SQLite);
* waiting for a pooled connection: ``pool_timeout``;
* each statement, server side: PostgreSQL's ``statement_timeout`` (``options=-c statement_timeout=...``);
* each round trip, client side: a PostgreSQL connection waits at most ``io_timeout`` for any answer
  (a statement, a commit, a rollback, the pool's ping), then closes itself and raises OperationalError.
  The server-side timeout cannot fire on a server that is stopped or unreachable; this one does;
* a peer that vanished from the network: TCP keepalives and ``tcp_user_timeout``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

#: Defaults of make_engine (seconds).
CONNECT_TIMEOUT = 3.0
STATEMENT_TIMEOUT = 10.0
IO_TIMEOUT_MARGIN = 5.0  # io_timeout = statement_timeout + this: the server's own timeout answers first
POOL_TIMEOUT = 5.0
SQLITE_BUSY_TIMEOUT = 5.0


class Base(DeclarativeBase):
    """Base class of every table; Alembic's target metadata."""


def make_engine(
    database_url: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    statement_timeout: float | None = STATEMENT_TIMEOUT,
    io_timeout: float | None = None,
    busy_timeout: float = SQLITE_BUSY_TIMEOUT,
    **kwargs,
) -> Engine:
    """An engine tuned for many short transactions from many threads, never waiting unbounded.

    ``statement_timeout`` (PostgreSQL, seconds; None: no limit, e.g. for migrations) bounds each
    statement on the server; ``io_timeout`` (default: statement_timeout + 5 s, None with it) bounds each
    round trip on the client. ``busy_timeout`` is SQLite's wait for a lock. Other keyword arguments go
    to ``create_engine`` (``pool_timeout`` defaults to a few seconds).

    ``hide_parameters``: SQLAlchemy's error messages would otherwise carry the statement's parameters,
    a caller's number among them, into logs.
    """
    kwargs.setdefault("hide_parameters", True)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT)
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": busy_timeout, "check_same_thread": False})
        kwargs.setdefault("pool_size", 8)
        kwargs.setdefault("max_overflow", 24)
        engine = create_engine(database_url, **kwargs)
        busy_ms = max(0, int(busy_timeout * 1000))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 30)
    kwargs.setdefault("pool_pre_ping", True)
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    engine = create_engine(database_url, **kwargs)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        if io_timeout is None and statement_timeout is not None:
            io_timeout = statement_timeout + IO_TIMEOUT_MARGIN
        _bound_psycopg(engine, connect_timeout, statement_timeout, io_timeout)
    return engine


def _bound_psycopg(engine: Engine, connect_timeout: float, statement_timeout: float | None,
                   io_timeout: float | None) -> None:
    connection_class = _bounded_connection_class(io_timeout)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):
        # Values from the URL or from connect_args win over these defaults.
        cparams.setdefault("connect_timeout", max(2, round(connect_timeout)))  # libpq counts whole seconds
        if statement_timeout is not None:
            ours = f"-c statement_timeout={int(statement_timeout * 1000)}"
            # A later "-c" wins in PostgreSQL: the URL's own options go after ours.
            cparams["options"] = f"{ours} {cparams['options']}" if cparams.get("options") else ours
        cparams.setdefault("keepalives", 1)
        cparams.setdefault("keepalives_idle", 10)
        cparams.setdefault("keepalives_interval", 3)
        cparams.setdefault("keepalives_count", 3)
        if io_timeout is not None:
            cparams.setdefault("tcp_user_timeout", int(io_timeout * 1000))  # unacknowledged data: milliseconds
        return connection_class.connect(*cargs, **cparams)


def _bounded_connection_class(io_timeout: float | None):
    # Function-local: psycopg is only needed (and only imported) for a PostgreSQL engine.
    import psycopg
    from psycopg import errors as pg_errors

    wait_timeout = getattr(pg_errors, "_WaitTimeout", None)
    if io_timeout is None or wait_timeout is None:
        return psycopg.Connection

    class BoundedConnection(psycopg.Connection):
        """A psycopg connection whose every wait for the server ends after ``io_timeout`` seconds: the
        connection is then closed (its state is unknown) and OperationalError raised, which SQLAlchemy
        takes for a disconnect (the connection is dropped from the pool)."""

        def wait(self, gen, *args, **kwargs):
            if kwargs.get("timeout") is None and len(args) < 2:
                kwargs["timeout"] = io_timeout
            try:
                return super().wait(gen, *args, **kwargs)
            except wait_timeout:
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {io_timeout:g} s; connection closed"
                ) from None

    return BoundedConnection


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)
