"""SQLAlchemy engine, sessions and the declarative base shared by every domain package."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Base class of every table; Alembic's target metadata."""


def make_engine(database_url: str, **kwargs) -> Engine:
    """An engine tuned for many short transactions from many threads.

    ``hide_parameters``: SQLAlchemy's error messages would otherwise carry the statement's parameters,
    a caller's number among them, into logs.
    """
    kwargs.setdefault("hide_parameters", True)
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        kwargs.setdefault("pool_size", 8)
        kwargs.setdefault("max_overflow", 24)
        kwargs.setdefault("pool_timeout", 60)
        engine = create_engine(database_url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 30)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", 60)
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
    if database_url.startswith("postgresql"):
        # A host that drops packets must not hold a caller's ticket save for minutes.
        kwargs.setdefault("connect_args", {"connect_timeout": 2})
    return create_engine(database_url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)
