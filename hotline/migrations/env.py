"""Alembic environment: run by hotline.migrate (which passes an open connection) or the alembic CLI."""

from __future__ import annotations

from alembic import context

import web.tokens  # noqa: F401 - registers its tables on Base.metadata
import orders.models  # noqa: F401
import virtual_numbers.models  # noqa: F401
import queues.agents  # noqa: F401
import queues.callbacks  # noqa: F401
from base.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        # Only when Alembic runs without a URL (its own CLI): settings are read from the environment then.
        from config import load_settings

        url = load_settings().database_url
    engine = make_engine(url, statement_timeout=None)  # a migration may take long on a big table
    try:
        with engine.connect() as connection:
            _configure_and_run(connection)
            connection.commit()
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
