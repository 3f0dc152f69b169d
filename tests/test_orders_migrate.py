"""hotline.migrate: the packaged Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import web.tokens  # noqa: F401 - the models the migrations must match
import orders.models  # noqa: F401
import virtual_numbers.models  # noqa: F401
import queues.agents  # noqa: F401
import queues.callbacks  # noqa: F401
from hotline import migrate
from base.db import Base, make_engine

#: Tables the migrations own so far. A package that adds models adds its revision and its tables here.
MIGRATED_TABLES = {"agents", "agent_queues", "call_backs", "api_tokens", "tickets", "call_records", "ticket_sequences", "departments", "department_phones",
                   "ticket_assignments", "ticket_events", "dispatch_rules", "virtual_numbers", "bindings",
                   "binding_parties", "binding_extensions", "resolution_records"}


def schema_differences(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_object": lambda obj, name, kind, reflected, compare_to: (
                        kind != "table" or name in MIGRATED_TABLES | {"alembic_version"}
                    ),
                },
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def table_names(database_url):
    engine = make_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_the_models_schema(database_url):
    assert migrate.current(database_url) is None
    migrate.upgrade(database_url)
    assert migrate.current(database_url) == migrate.head() == "0005"
    assert table_names(database_url) == MIGRATED_TABLES | {"alembic_version"}
    assert schema_differences(database_url) == []


def test_upgrade_twice_is_a_no_op(database_url):
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO ticket_sequences (day, last_value) VALUES ('20261128', 7)"))
        migrate.upgrade(database_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT last_value FROM ticket_sequences")).scalar() == 7
    finally:
        engine.dispose()
    assert migrate.current(database_url) == "0005"
    assert schema_differences(database_url) == []


def test_the_comparison_does_see_a_difference(database_url):
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_tickets_status_created_at"))
    finally:
        engine.dispose()
    differences = schema_differences(database_url)
    assert [d[0] for d in differences] == ["add_index"]
    assert differences[0][1].name == "ix_tickets_status_created_at"


def test_downgrade_to_base_and_back(database_url):
    migrate.upgrade(database_url)
    migrate.downgrade(database_url, "base")
    assert migrate.current(database_url) is None
    assert table_names(database_url) <= {"alembic_version"}
    migrate.upgrade(database_url)
    assert schema_differences(database_url) == []


@pytest.mark.parametrize("revision, current", [("0001", "0001"), ("head", "0005")])
def test_named_revisions(database_url, revision, current):
    migrate.upgrade(database_url, revision)
    assert migrate.current(database_url) == current
