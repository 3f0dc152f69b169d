"""Database migrations, run from Python: the Alembic scripts ship inside the package (hotline/migrations),
so no alembic.ini is needed. ``upgrade`` works on SQLite and PostgreSQL alike.

For developers adding a revision::

    from alembic import command
    from hotline.migrate import make_config
    command.revision(make_config("sqlite:///var/base.db"), message="...", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from base.db import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_config(database_url: str | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (and at ``database_url`` if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        # Config values go through configparser interpolation: a literal "%" must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` up to ``revision``; a no-op if it is there already."""
    _run(command.upgrade, database_url, revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the database back to ``revision`` ("base" drops every table the migrations made)."""
    _run(command.downgrade, database_url, revision)


def _run(alembic_command, database_url: str, revision: str) -> None:
    """Run an Alembic command in one transaction on our own engine (URL forms, SQLite pragmas)."""
    engine = make_engine(database_url, statement_timeout=None)  # a migration may take long on a big table
    try:
        with engine.begin() as connection:
            config = make_config(database_url)
            config.attributes["connection"] = connection
            alembic_command(config, revision)
    finally:
        engine.dispose()


def current(database_url: str) -> str | None:
    """The revision the database is at (None for a database never migrated)."""
    engine = make_engine(database_url, statement_timeout=None)  # a migration may take long on a big table
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision the packaged migrations know."""
    return ScriptDirectory.from_config(make_config()).get_current_head()
