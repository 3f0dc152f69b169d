"""hotline/startup.py: storage that cannot be reached at start-up is one line, without passwords."""

from __future__ import annotations

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from base.db import make_engine, make_session_factory
from hotline.startup import describe_storage_error, is_storage_error, safe_url
from orders.errors import StorageUnavailable
from orders.store import TicketStore
from orders.views import TicketFilter
from tests.test_web_support import closed_port

PASSWORD = "s3cret-Pw"
PHONE = "13912348000"


def _assert_one_safe_line(line: str) -> None:
    assert line and "\n" not in line and "\t" not in line
    assert PASSWORD not in line and PHONE not in line
    assert "Traceback" not in line and "sqlalche.me" not in line


def test_an_unreachable_postgresql_names_the_url_without_its_password():
    port = closed_port()
    url = f"postgresql://hotline:{PASSWORD}@127.0.0.1:{port}/hotline"
    engine = make_engine(url)
    try:
        with pytest.raises(sa_exc.OperationalError) as caught:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    line = describe_storage_error(caught.value, database_url=url)
    _assert_one_safe_line(line)
    assert line.startswith(f"cannot use the database at postgresql://hotline:***@127.0.0.1:{port}/hotline: ")
    assert "Connection refused" in line and is_storage_error(caught.value)


def test_an_unreachable_redis_names_the_url_without_its_password():
    port = closed_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    with pytest.raises(redis.ConnectionError) as caught:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    line = describe_storage_error(caught.value, database_url="sqlite:///x.db", redis_url=url)
    _assert_one_safe_line(line)
    assert line.startswith(f"cannot use Redis at redis://:***@127.0.0.1:{port}/0: ConnectionError: ")


def test_an_sqlite_file_that_cannot_be_opened(tmp_path):
    (tmp_path / "dir").write_text("a file, not a folder")
    url = f"sqlite:///{tmp_path}/dir/hotline.db"
    engine = create_engine(url)  # not make_engine: it would try to create the folder
    try:
        with pytest.raises(sa_exc.OperationalError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    line = describe_storage_error(caught.value, database_url=url)
    _assert_one_safe_line(line)
    assert line == f"cannot use the database at {url}: OperationalError: unable to open database file"


def test_a_store_error_and_a_wrapped_error_are_read_through(tmp_path):
    port = closed_port()
    url = f"postgresql://hotline:{PASSWORD}@127.0.0.1:{port}/hotline"
    engine = make_engine(url)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            TicketStore(make_session_factory(engine)).search(TicketFilter())
    finally:
        engine.dispose()
    line = describe_storage_error(caught.value, database_url=url)
    _assert_one_safe_line(line)
    assert "Connection refused" in line and "***@127.0.0.1" in line

    try:
        try:
            raise caught.value
        except StorageUnavailable as inner:
            raise RuntimeError("migration failed") from inner
    except RuntimeError as outer:
        assert describe_storage_error(outer, database_url=url) == line


@pytest.mark.parametrize("message", [
    f'invalid dsn: "postgresql://hotline:{PASSWORD}@db:5432/hotline"',
    f"connection to server failed: password={PASSWORD} host=db",
    f"FATAL: role for caller {PHONE}\nDETAIL: second line",
])
def test_passwords_and_numbers_a_driver_quotes_back_are_removed(message):
    error = sa_exc.OperationalError("SELECT 1", {"caller": PHONE}, psycopg.OperationalError(message))
    line = describe_storage_error(error)
    _assert_one_safe_line(line)
    assert line.startswith("cannot use the database: OperationalError: ")
    assert "second line" not in line


def test_an_error_not_from_storage_is_still_one_safe_line():
    line = describe_storage_error(ValueError(f"bad\nthings with {PHONE}"))
    assert line == "ValueError: bad" and not is_storage_error(ValueError("x"))


@pytest.mark.parametrize("url,expected", [
    (f"postgresql://hotline:{PASSWORD}@db:5432/hotline", "postgresql://hotline:***@db:5432/hotline"),
    (f"postgresql+psycopg://hotline:{PASSWORD}@db/hotline?sslmode=require",
     "postgresql+psycopg://hotline:***@db/hotline?sslmode=require"),
    (f"redis://default:{PASSWORD}@redis:6379/0", "redis://default:***@redis:6379/0"),
    (f"rediss://:{PASSWORD}@redis:6380/1", "rediss://:***@redis:6380/1"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("sqlite:////var/lib/hotline/hotline.db", "sqlite:////var/lib/hotline/hotline.db"),
])
def test_safe_url_hides_only_the_password(url, expected):
    assert safe_url(url) == expected
