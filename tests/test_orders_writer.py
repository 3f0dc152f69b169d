"""Never lose a ticket: TicketWriter, the RQ retry job and the spool, against real PostgreSQL, SQLite
and Redis. The database going down is a TCP proxy in front of PostgreSQL being switched off."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry, SimpleWorker
from rq.job import JobStatus
from sqlalchemy import func, select

from base.db import make_engine, make_session_factory
from jobs import tickets as jobs
from orders.errors import InvalidSnapshot, TicketNotKept
from orders.models import CallRecord, Ticket
from orders.store import TicketStore
from orders.writer import TicketWriter, WriteOutcome
from tests.orders_fixtures import (  # noqa: F401
    T0,
    closed_port,
    make_snapshot,
    pg_proxy,
    postgres_only,
    rq_queue,
    sqlite_only,
    store,
    unreachable_database_url,
)

CALLER_DIGITS = "13800138000"


@pytest.fixture(autouse=True)
def _reset_job_store():
    yield
    jobs.configure(None)


@pytest.fixture
def redis_down():
    client = redis_lib.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, socket_timeout=1,
                             retry=RedisRetry(NoBackoff(), 0))
    yield client
    client.close()


@pytest.fixture
def down_store(database_url, tmp_path):
    engine = make_engine(unreachable_database_url(database_url, tmp_path))
    yield TicketStore(make_session_factory(engine))
    engine.dispose()


def run_worker(queue: Queue, with_scheduler: bool = False) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=with_scheduler)


def tickets_in(store_: TicketStore) -> tuple[int, int]:
    with store_._session_factory() as session:
        return (session.scalar(select(func.count()).select_from(Ticket)),
                session.scalar(select(func.count()).select_from(CallRecord)))


def final_of(snap):
    end = snap.created_at + timedelta(seconds=50)
    return snap.next(now=end, status="queued", category="water", ivr_path="language:1>main:2",
                     answered_at=snap.created_at + timedelta(seconds=1), ended_at=end, outcome="routed")


def writer_for(store_, queue, tmp_path):
    return TicketWriter(store_, jobs.make_enqueue(queue), tmp_path / "spool" / "tickets.jsonl")


# -- the database answers ------------------------------------------------------------------------

def test_saved_when_the_database_answers(store, rq_queue, tmp_path):
    writer = writer_for(store, rq_queue, tmp_path)
    snap = make_snapshot()
    assert writer.save(snap) == WriteOutcome.saved == "saved"
    assert writer.save(final_of(snap)) == "saved"
    assert rq_queue.count == 0
    assert store.get(snap.number).revision == 2


# -- the database is down: deferred into a real RQ queue, saved later by a real worker -----------------

@postgres_only
@pytest.mark.parametrize("order", ["open deferred, final direct", "open direct, final deferred", "both deferred"])
def test_deferred_snapshots_end_with_the_newest_revision_once(pg_proxy, rq_queue, tmp_path, order):
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    writer = writer_for(proxied_store, rq_queue, tmp_path)
    opening = make_snapshot()
    final = final_of(opening)

    if order == "open direct, final deferred":
        assert writer.save(opening) == "saved"
    proxy.stop()
    if order != "open direct, final deferred":
        assert writer.save(opening) == "deferred"
    if order != "open deferred, final direct":
        assert writer.save(final) == "deferred"
    proxy.start()
    if order == "open deferred, final direct":
        assert writer.save(final) == "saved"

    assert rq_queue.count == (2 if order == "both deferred" else 1)
    run_worker(rq_queue)
    assert rq_queue.count == 0 and rq_queue.failed_job_registry.count == 0
    view = proxied_store.get(opening.number)
    assert (view.revision, view.status, view.category, view.call.outcome) == (2, "queued", "water", "routed")
    assert tickets_in(proxied_store) == (1, 1)


@postgres_only
def test_a_newer_revision_queued_before_an_older_one(pg_proxy, rq_queue):
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    opening = make_snapshot()
    jobs.enqueue_snapshot(rq_queue, final_of(opening).to_dict())
    jobs.enqueue_snapshot(rq_queue, opening.to_dict())
    run_worker(rq_queue)
    assert proxied_store.get(opening.number).revision == 2
    assert tickets_in(proxied_store) == (1, 1)


def test_running_the_same_job_twice_writes_nothing_twice(store, rq_queue):
    jobs.configure(store)
    job = jobs.enqueue_snapshot(rq_queue, make_snapshot().to_dict())
    run_worker(rq_queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.return_value(refresh=True) is True
    rq_queue.enqueue_job(job)  # the very same job, delivered again
    run_worker(rq_queue)
    assert job.return_value(refresh=True) is False
    assert tickets_in(store) == (1, 1)


@postgres_only
def test_a_job_that_fails_is_retried_once_the_database_is_back(pg_proxy, rq_queue, tmp_path):
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    writer = writer_for(proxied_store, rq_queue, tmp_path)
    proxy.stop()
    snap = make_snapshot()
    assert writer.save(snap) == "deferred"
    before = datetime.now(timezone.utc)
    run_worker(rq_queue)  # still down: the job fails and is scheduled for its first retry
    after = datetime.now(timezone.utc)
    job = rq_queue.fetch_job(rq_queue.scheduled_job_registry.get_job_ids()[0])
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.retries_left == len(jobs.RETRY_INTERVALS) - 1
    due = rq_queue.scheduled_job_registry.get_scheduled_time(job)
    first = timedelta(seconds=jobs.RETRY_INTERVALS[0])
    assert before + first - timedelta(seconds=1) <= due <= after + first  # RQ keeps whole seconds
    proxy.start()
    assert proxied_store.get(snap.number) is None
    # Instead of waiting 5 s, move the retry's due time into the past; the burst scheduler enqueues it.
    rq_queue.scheduled_job_registry.schedule(job, datetime.now(timezone.utc) - timedelta(seconds=1))
    run_worker(rq_queue, with_scheduler=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert proxied_store.get(snap.number).revision == 1


@postgres_only
def test_exhausted_retries_wait_in_the_failed_registry_for_an_operator(pg_proxy, rq_queue):
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    proxy.stop()
    snap = make_snapshot()
    job = jobs.enqueue_snapshot(rq_queue, snap.to_dict(), retry=Retry(max=2))  # no interval: all in one burst
    run_worker(rq_queue)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert rq_queue.failed_job_registry.get_job_ids() == [job.id]
    proxy.start()
    assert jobs.requeue_failed(rq_queue) == 1
    run_worker(rq_queue)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert proxied_store.get(snap.number) is not None


@sqlite_only
def test_unreachable_sqlite_defers_too(down_store, store, rq_queue, tmp_path):
    writer = writer_for(down_store, rq_queue, tmp_path)
    snap = make_snapshot()
    assert writer.save(snap) == "deferred"
    jobs.configure(store)  # the worker's database answers
    run_worker(rq_queue)
    assert store.get(snap.number).revision == 1


def test_the_job_builds_its_store_from_the_settings(database_url, engine, monkeypatch):
    monkeypatch.setenv("HOTLINE_DATABASE_URL", database_url)
    jobs.configure(None)
    assert jobs.save_ticket_snapshot(make_snapshot().to_dict()) is True
    assert jobs.save_ticket_snapshot(make_snapshot().to_dict()) is False
    jobs._current_store()._session_factory.kw["bind"].dispose()


def test_enqueue_snapshot(rq_queue):
    snap = make_snapshot()
    job = jobs.enqueue_snapshot(rq_queue, snap.to_dict())
    assert job.func_name == "jobs.tickets.save_ticket_snapshot"
    assert job.retries_left == len(jobs.RETRY_INTERVALS) and job.retry_intervals == list(jobs.RETRY_INTERVALS)
    assert job.failure_ttl >= 30 * 24 * 3600
    assert job.description == f"save ticket {snap.number} revision 1" and job.id.startswith(f"ticket-{snap.number}-r1-")
    assert 20 * 3600 <= sum(jobs.RETRY_INTERVALS) <= 30 * 3600
    with pytest.raises(InvalidSnapshot):
        jobs.enqueue_snapshot(rq_queue, {"number": "x"})
    assert rq_queue.count == 1


# -- Redis is down too: the spool ---------------------------------------------------------------------

def spool_lines(writer):
    path = writer.spool.path
    return path.read_text().splitlines() if path.exists() else []


def test_spooled_when_redis_is_down_too_then_replayed(down_store, store, redis_down, tmp_path):
    dead_queue = Queue("hotline", connection=redis_down)
    during = TicketWriter(down_store, jobs.make_enqueue(dead_queue), tmp_path / "spool" / "tickets.jsonl")
    opening = make_snapshot()
    assert during.save(opening) == "spooled"
    assert during.save(final_of(opening)) == "spooled"
    assert [json.loads(line)["revision"] for line in spool_lines(during)] == [1, 2]
    assert during.replay_spool() == (0, 2)  # nothing answers yet: both kept
    assert during.spool.pending() == 2

    after = TicketWriter(store, jobs.make_enqueue(dead_queue), tmp_path / "spool" / "tickets.jsonl")
    assert after.replay_spool() == (2, 0)
    assert spool_lines(after) == [] and after.spool.pending() == 0
    view = store.get(opening.number)
    assert (view.revision, view.call.outcome) == (2, "routed")


def test_replay_into_the_queue_when_only_redis_is_back(down_store, store, redis_down, rq_queue, tmp_path):
    path = tmp_path / "spool" / "tickets.jsonl"
    snap = make_snapshot()
    assert TicketWriter(down_store, jobs.make_enqueue(Queue("x", connection=redis_down)), path).save(snap) == "spooled"
    assert writer_for(down_store, rq_queue, tmp_path).replay_spool() == (1, 0)
    assert rq_queue.count == 1
    jobs.configure(store)
    run_worker(rq_queue)
    assert store.get(snap.number) is not None


def test_replay_removes_only_what_it_handled(store, down_store, redis_down, tmp_path):
    path = tmp_path / "spool" / "tickets.jsonl"
    spooling = TicketWriter(down_store, jobs.make_enqueue(Queue("x", connection=redis_down)), path)
    good = make_snapshot(number="2026112800001", uniqueid="1.1")
    clash = make_snapshot(number="2026112800002", uniqueid="1.2", created_at=T0 + timedelta(hours=1))
    later = make_snapshot(number="2026112800003", uniqueid="1.3")
    for snap in (good, clash, later):
        assert spooling.save(snap) == "spooled"
    with open(path, "a") as fh:
        fh.write("this is not json\n")
    store.save(make_snapshot(number="2026112800002", uniqueid="1.9"))  # number 2 now belongs to another call

    # The database is back, Redis is not: the clash can be neither saved nor queued, so it and the line
    # after it stay; the first is gone from the spool.
    replaying = TicketWriter(store, jobs.make_enqueue(Queue("x", connection=redis_down)), path)
    assert replaying.replay_spool() == (1, 3)
    assert [json.loads(line)["number"] for line in spool_lines(replaying)[:2]] == ["2026112800002", "2026112800003"]
    assert spool_lines(replaying)[2] == "this is not json"
    assert store.get("2026112800003") is None

    # An operator resolves the clash (here: drops that line); the next replay takes the rest and sets the
    # junk line aside for reading, never deleting it.
    path.write_text("\n".join(spool_lines(replaying)[1:]) + "\n")
    assert replaying.replay_spool() == (2, 0)
    assert store.get("2026112800003") is not None
    rejected = (tmp_path / "spool" / "tickets.jsonl.rejected").read_text()
    assert json.loads(rejected)["line"] == "this is not json"


def test_when_nothing_can_keep_the_snapshot_the_caller_is_told(down_store, redis_down, tmp_path):
    (tmp_path / "a-file").write_text("")
    writer = TicketWriter(down_store, jobs.make_enqueue(Queue("x", connection=redis_down)),
                          tmp_path / "a-file" / "tickets.jsonl")
    with pytest.raises(TicketNotKept, match="ticket 2026112800001 revision 1 could not be saved, queued or spooled"):
        writer.save(make_snapshot())


@postgres_only
def test_no_branch_logs_the_callers_number(pg_proxy, redis_down, rq_queue, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    writer = writer_for(proxied_store, rq_queue, tmp_path)
    spooling = TicketWriter(proxied_store, jobs.make_enqueue(Queue("x", connection=redis_down)),
                            tmp_path / "spool" / "tickets.jsonl")
    snap = make_snapshot()
    writer.save(snap)
    proxy.stop()
    assert writer.save(final_of(snap)) == "deferred"
    assert spooling.save(final_of(snap)) == "spooled"
    run_worker(rq_queue)  # fails (database down) and is scheduled for a retry
    proxy.start()
    spooling.replay_spool()
    proxied_store.save(make_snapshot(number="2026112800009", uniqueid="2.2"))
    writer.save(make_snapshot(number="2026112800009", uniqueid="2.3", created_at=T0 + timedelta(hours=1)))  # clash
    assert "deferred" in caplog.text or "retry" in caplog.text  # the branches did log
    for record in caplog.records:
        text = record.getMessage()
        assert CALLER_DIGITS not in text and "8613800138000" not in text


def test_spool_appends_from_many_threads_while_replaying_lose_nothing(tmp_path):
    import threading

    from orders.spool import SnapshotSpool

    spool = SnapshotSpool(tmp_path / "spool" / "tickets.jsonl")
    taken: list[int] = []
    barrier = threading.Barrier(9)

    def append(worker):
        barrier.wait()
        for i in range(40):
            spool.append({"worker": worker, "i": i, "pad": "x" * 500})

    def replay():
        barrier.wait()
        for _ in range(20):
            spool.replay(lambda data, line: taken.append(data["worker"] * 100 + data["i"]) or True)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)] + [threading.Thread(target=replay)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.replay(lambda data, line: taken.append(data["worker"] * 100 + data["i"]) or True)
    assert sorted(taken) == sorted(w * 100 + i for w in range(8) for i in range(40))
    assert spool.pending() == 0
