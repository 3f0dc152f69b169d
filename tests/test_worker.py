"""hotline worker: deferred ticket writes and spooled snapshots reach the database."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

from rq import Queue

from base.vocabulary import Role
from config import load_settings
from hotline.services import build_services
from hotline.worker import check_deadlines, run_worker
from jobs import tickets as jobs
from orders.snapshot import TicketSnapshot
from orders.spool import SnapshotSpool
from orders.cases import Actor, MoveFields
from orders.lifecycle import Move
from orders.store import TicketStore
from orders.writer import spool_path_for
from tests.conftest import REDIS_URL
from tests.servers import RedisServer, free_port


def _snapshot(number: str, age: timedelta = timedelta(0)) -> TicketSnapshot:
    created = datetime.now(timezone.utc) - age
    return TicketSnapshot(number=number, revision=1, caller_raw="13800138000", caller_e164="+8613800138000",
                          caller_kind="mobile", created_at=created, uniqueid=f"{number}.1")


def _settings(database_url, tmp_path, **overrides):
    overrides.setdefault("redis_url", REDIS_URL)
    return load_settings(environ={}, data_dir=tmp_path, database_url=database_url,
                         rq_queue="test-" + uuid.uuid4().hex[:8], **overrides)


def test_worker_writes_queued_and_spooled_tickets(database_url, engine, session_factory, redis_conn, tmp_path):
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, redis_url=REDIS_URL,
                             rq_queue="test-" + uuid.uuid4().hex[:8])
    queue = Queue(settings.rq_queue, connection=redis_conn)
    try:
        jobs.enqueue_snapshot(queue, _snapshot("2026112800101").to_dict())
        SnapshotSpool(spool_path_for(tmp_path)).append(_snapshot("2026112800102").to_dict())

        run_worker(settings, burst=True)

        store = TicketStore(session_factory)
        assert store.get("2026112800101") is not None  # from the RQ job
        assert store.get("2026112800102") is not None  # from the spool
        assert SnapshotSpool(spool_path_for(tmp_path)).pending() == 0
    finally:
        jobs.configure(None)
        queue.delete(delete_jobs=True)


def test_worker_settles_calls_whose_handler_died(database_url, engine, session_factory, redis_conn, tmp_path):
    settings = _settings(database_url, tmp_path, agi_session_timeout=600)
    store = TicketStore(session_factory)
    store.save(_snapshot("2026112800201", age=timedelta(hours=1)))  # its FastAGI process was killed
    store.save(_snapshot("2026112800202", age=timedelta(minutes=5)))  # may still be in the IVR
    try:
        run_worker(settings, burst=True)
    finally:
        jobs.configure(None)
    dead = store.get("2026112800201")
    assert (dead.status, dead.revision, dead.call.outcome) == ("queued", 1, "fallback")
    assert store.get("2026112800202").status == "in_ivr"


def test_stale_cutoff_follows_the_session_timeout():
    from hotline.worker import stale_cutoff

    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    settings = load_settings(environ={}, agi_session_timeout=900, stale_call_margin_seconds=45)
    assert stale_cutoff(settings, now) == now - timedelta(seconds=900 + 45)


def test_a_running_worker_replays_the_spool_every_few_seconds(database_url, engine, tmp_path, monkeypatch):
    from rq import SimpleWorker

    from orders.writer import TicketWriter

    intervals = []
    monkeypatch.setattr(SimpleWorker, "work", lambda self, **kwargs: True)
    monkeypatch.setattr(TicketWriter, "start_replaying", lambda self, interval=2.0: intervals.append(interval))
    try:
        assert run_worker(_settings(database_url, tmp_path), burst=False) is True
    finally:
        jobs.configure(None)
    assert len(intervals) == 1 and 0 < intervals[0] <= 5


def test_deadlines_survive_a_worker_restart_and_a_redis_that_lost_everything(
        database_url, engine, session_factory, tmp_path, caplog):
    """Deadlines live in the database: a worker started again on a Redis that restarted empty (a throwaway
    server on a free port, killed with -9) still warns and marks overdue, once each."""
    store = TicketStore(session_factory)
    number = "2026112800301"
    store.save(_snapshot(number).next(status="queued", urgency="high"))
    redis_server = RedisServer(tmp_path / "redis", free_port(), appendonly=False)
    redis_server.start()
    try:
        settings = _settings(database_url, tmp_path, redis_url=redis_server.url)
        services = build_services(settings)
        try:
            services.departments.create("water", "供水公司", "Water company")
            agent = Actor("agent-li", Role.agent)
            version = services.casework.apply(number, Move.register, agent, 1, MoveFields(category="water", summary="s"))
            services.casework.apply(number, Move.dispatch, agent, version, MoveFields(lead="water"))
            run_worker(settings, burst=True)  # within its 30 minutes: nothing to say yet
        finally:
            services.close()
            jobs.configure(None)
        assert store.get(number).overdue_since is None
        redis_server.restart_empty()
        caplog.set_level(logging.INFO, logger="hotline.worker")
        run_worker(settings, burst=True)  # a new worker on the empty Redis
        jobs.configure(None)
        services = build_services(settings)
        try:
            later = datetime.now(timezone.utc) + timedelta(minutes=31)
            assert check_deadlines(services, later) == 1
            assert check_deadlines(services, later + timedelta(hours=1)) == 0  # once
        finally:
            services.close()
    finally:
        redis_server.kill9()
    assert store.get(number).overdue_since is not None
    overdue = [r for r in caplog.records if getattr(r, "event", "") == "ticket.overdue"]
    assert [r.ticket for r in overdue] == [number]
