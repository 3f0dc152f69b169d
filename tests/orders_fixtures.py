"""Fixtures for the orders tests: snapshots, a switchable TCP proxy in front of PostgreSQL, RQ queues.

Import with ``from tests.orders_fixtures import *`` in a test module.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import datetime, timezone

import pytest
from rq import Queue
from sqlalchemy.engine import make_url

from base.db import make_engine, make_session_factory
from orders.caller import normalise_caller
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from tests.servers import free_port

__all__ = [
    "postgres_only",
    "sqlite_only",
    "TcpProxy",
    "closed_port",
    "make_snapshot",
    "pg_proxy",
    "rq_queue",
    "run_bounded",
    "store",
    "unreachable_database_url",
]

def _only(backend: str):
    from tests.conftest import BACKENDS

    if backend not in BACKENDS:
        return pytest.mark.skip(reason=f"{backend} is not among HOTLINE_TEST_BACKENDS")
    return pytest.mark.parametrize("database_url", [backend], indirect=True)


#: Run a test on one backend only (overrides the database_url fixture's parametrization).
postgres_only = _only("postgresql")
sqlite_only = _only("sqlite")

T0 = datetime(2026, 11, 28, 2, 30, tzinfo=timezone.utc)


def make_snapshot(number: str = "2026112800001", revision: int = 1, caller: str = "13800138000", **changes):
    """A phone ticket as the call handler builds it when the call starts."""
    number_ = normalise_caller(caller)
    values = dict(
        number=number,
        revision=revision,
        caller_raw=number_.raw,
        caller_e164=number_.e164,
        caller_kind=number_.kind,
        created_at=T0,
        ivr_path="language:1",
        uniqueid=f"1764297000.{number[-5:]}",
        linkedid=f"1764297000.{number[-5:]}",
        call_channel="PJSIP/trunk-00000001",
        dialed_number="12345",
    )
    values.update(changes)
    return TicketSnapshot(**values)


#: A loopback port nothing listens on: one the OS had free a moment ago (good enough for a test run).
closed_port = free_port


def unreachable_database_url(database_url: str, tmp_path) -> str:
    """A URL of the same kind as ``database_url`` that cannot be opened."""
    if database_url.startswith("sqlite"):
        directory = tmp_path / "not-a-database"
        directory.mkdir(exist_ok=True)
        return f"sqlite:///{directory}"  # SQLite cannot open a directory as a database
    url = make_url(database_url).set(host="127.0.0.1", port=closed_port())
    return url.render_as_string(hide_password=False)


@pytest.fixture
def store(session_factory):
    return TicketStore(session_factory)


class TcpProxy:
    """Relays 127.0.0.1:<port> to a target; ``stop()`` refuses new connections and cuts open ones
    (the database is down), ``start()`` listens again on the same port (it is back).

    ``hold()`` makes the database hang instead (a server that stops answering, not one that refuses): new
    connections are accepted and never relayed, and open ones stop relaying (what they send is read and
    held back). ``release()`` (or ``start()`` after ``stop()``) lets held data through again and drops the
    connections accepted while holding, as a resumed server whose clients gave up."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._held: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, set()
        for sock in held:
            _close(sock)
        self._flowing.set()

    @property
    def holding(self) -> bool:
        return not self._flowing.is_set()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            _close(sock)
        self.release()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by stop()
            if self.holding:  # a hung server: the kernel accepts, nothing ever answers
                with self._lock:
                    self._held.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while not self._flowing.wait(0.5):  # held: keep the data, relay nothing
                    if src.fileno() < 0:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def url_for(self, database_url: str) -> str:
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)


def run_bounded(target, limit=60.0):
    """Run ``target`` in a thread; its result, or AssertionError if it is still waiting after ``limit``
    seconds (a hang, as before the timeouts; the thread is left behind, a daemon)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = target()
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "still waiting on a hung database"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def pg_proxy(database_url, engine):
    """(proxy, store through the proxy); the schema already exists. Use with ``@postgres_only``."""
    if not database_url.startswith("postgresql"):
        raise RuntimeError("pg_proxy stands in front of PostgreSQL: mark the test @postgres_only")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    proxied = make_engine(proxy.url_for(database_url))
    yield proxy, TicketStore(make_session_factory(proxied))
    proxied.dispose()
    proxy.stop()


@pytest.fixture
def rq_queue(redis_conn):
    """An RQ queue with a name of its own; its jobs and registries are deleted afterwards."""
    queue = Queue(f"test-orders-{uuid.uuid4().hex[:10]}", connection=redis_conn)
    yield queue
    job_ids = set(queue.get_job_ids())
    for registry in (
        queue.started_job_registry,
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.canceled_job_registry,
    ):
        job_ids.update(registry.get_job_ids())
    for job_id in job_ids:
        for key in redis_conn.scan_iter(f"rq:*{job_id}*"):
            redis_conn.delete(key)
    for key in redis_conn.scan_iter(f"rq:*{queue.name}*"):
        redis_conn.delete(key)
