"""Fixtures of the fault tests: one throwaway PostgreSQL cluster per session (a database per test), a
throwaway Redis per test, and a :class:`~tests.faults.hotline_proc.Hotline` per test whose processes are
all killed at the end, whatever happened.

The machine's own PostgreSQL (5432) and Redis (6379) are never used: every server here runs on a port the
OS picked, in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.servers import PG_BIN, REDIS_SERVER, throwaway_postgres, throwaway_redis


def _missing_tools() -> str | None:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "postgres").exists():
        return f"PostgreSQL binaries not found under {PG_BIN} (HOTLINE_TEST_FAULTS_PG_BIN)"
    if not shutil.which(REDIS_SERVER):
        return f"{REDIS_SERVER} not found (HOTLINE_TEST_FAULTS_REDIS_SERVER)"
    if os.geteuid() != 0:
        return "the fault tests run PostgreSQL as the `postgres` user, which needs root"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user on this machine"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: fault-injection tests (throwaway PostgreSQL and Redis servers, "
                                       "hotline subprocesses); part of the normal run")


def pytest_collection_modifyitems(config, items):
    reason = _missing_tools()
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def pg_cluster():
    with throwaway_postgres() as cluster:
        yield cluster


class Database:
    """A test's own database in the shared cluster, and the cluster's faults (they hit the whole cluster)."""

    def __init__(self, cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.url = cluster.url(name)

    def hang(self) -> None:
        self.cluster.hang()

    def resume(self) -> None:
        self.cluster.resume()

    def kill(self) -> None:
        self.cluster.kill()

    def start(self) -> None:
        self.cluster.start()


@pytest.fixture
def pg(pg_cluster):
    """A fresh database; the cluster is running and answering again after the test, whatever it did."""
    pg_cluster.restore()
    name = "hotline_" + uuid.uuid4().hex[:10]
    pg_cluster.create_database(name)
    db = Database(pg_cluster, name)
    yield db
    pg_cluster.restore()
    pg_cluster.drop_database(name)


@pytest.fixture
def redis_server(request):
    """A throwaway redis-server; ``@pytest.mark.parametrize("redis_server", [True], indirect=True)`` turns
    AOF persistence on (default off)."""
    appendonly = bool(getattr(request, "param", False))
    with throwaway_redis(appendonly=appendonly) as server:
        yield server


@pytest.fixture
def hotline_factory(tmp_path, pg, redis_server, request):
    """Builds Hotline objects for this test's database and Redis; every process they start is killed at
    the end (SIGTERM, then SIGKILL to the process groups, then anything still carrying the test's tag)."""
    from tests.faults.hotline_proc import Hotline

    made: list[Hotline] = []

    def make(**settings) -> Hotline:
        h = Hotline(Path(tmp_path) / f"hotline{len(made)}", pg.url, redis_server.url, **settings)
        made.append(h)
        return h

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for h in made:
        leftovers = h.close()
        if failed:
            print(f"\n===== logs of {h.workdir} (tail) =====\n{h.log_tail(3000)}")
        if leftovers:
            print(f"killed leftover processes of {h.workdir}: {leftovers}")


@pytest.fixture
def hotline(hotline_factory):
    return hotline_factory()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
