"""Never lose a ticket: TicketWriter, the spool, the RQ retry job, against real PostgreSQL, SQLite and
Redis. The database going down is a TCP proxy in front of PostgreSQL being switched off (refusing) or
holding (hung: accepting and never answering)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from rq import Queue, Retry, SimpleWorker
from rq.job import JobStatus
from sqlalchemy import func, select

from base.db import make_engine, make_session_factory
from jobs import tickets as jobs
from orders.errors import InvalidSnapshot, StorageUnavailable, TicketNotKept
from orders.models import CallRecord, Ticket
from orders.spool import SnapshotSpool
from orders.store import TicketStore
from orders.writer import BATCH_SIZE, TicketWriter, WriteOutcome
from tests.orders_fixtures import (  # noqa: F401
    T0,
    make_snapshot,
    pg_proxy,
    postgres_only,
    rq_queue,
    run_bounded,
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


# -- the database is down: spooled on the local disk, replayed into the database later -------------------

@postgres_only
@pytest.mark.parametrize("order", ["open spooled, final direct", "open direct, final spooled", "both spooled"])
def test_spooled_snapshots_end_with_the_newest_revision_once(pg_proxy, rq_queue, tmp_path, order):
    proxy, proxied_store = pg_proxy
    writer = writer_for(proxied_store, rq_queue, tmp_path)
    opening = make_snapshot()
    final = final_of(opening)

    if order == "open direct, final spooled":
        assert writer.save(opening) == "saved"
    proxy.stop()
    if order != "open direct, final spooled":
        assert writer.save(opening) == WriteOutcome.spooled == "spooled"
    if order != "open spooled, final direct":
        assert writer.save(final) == "spooled"
    proxy.start()
    if order == "open spooled, final direct":
        writer.breaker.succeeded()  # as the replayer's probe would, once the database answers
        assert writer.save(final) == "saved"

    assert rq_queue.count == 0  # Redis is not where deferred snapshots wait: it may lose them
    spooled = 2 if order == "both spooled" else 1
    assert writer.spool.pending() == spooled
    assert writer.replay_spool() == (spooled, 0)
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
    proxy.stop()
    snap = make_snapshot()
    jobs.enqueue_snapshot(rq_queue, snap.to_dict())
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
def test_unreachable_sqlite_spools_too(down_store, store, rq_queue, tmp_path):
    writer = writer_for(down_store, rq_queue, tmp_path)
    snap = make_snapshot()
    assert writer.save(snap) == "spooled"
    assert rq_queue.count == 0
    assert writer_for(store, rq_queue, tmp_path).replay_spool() == (1, 0)  # the database answers again
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
    assert job.args == (snap.number, 1) and job.kwargs == {}  # RQ logs these: the ticket number only
    assert job.meta[jobs.META_KEY] == snap.to_dict()
    assert job.retries_left == len(jobs.RETRY_INTERVALS) and job.retry_intervals == list(jobs.RETRY_INTERVALS)
    assert job.failure_ttl >= 30 * 24 * 3600
    assert job.description == f"save ticket {snap.number} revision 1" and job.id.startswith(f"ticket-{snap.number}-r1-")
    assert 20 * 3600 <= sum(jobs.RETRY_INTERVALS) <= 30 * 3600
    with pytest.raises(InvalidSnapshot):
        jobs.enqueue_snapshot(rq_queue, {"number": "x"})
    assert rq_queue.count == 1


# -- the spool first, RQ only when the disk refuses ------------------------------------------------------

def spool_lines(writer):
    path = writer.spool.path
    return path.read_text().splitlines() if path.exists() else []


def test_spooled_even_with_redis_down_then_replayed(down_store, store, redis_down, tmp_path):
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


def test_the_retry_queue_is_the_last_resort_when_the_disk_refuses(down_store, store, rq_queue, tmp_path):
    (tmp_path / "a-file").write_text("")
    writer = TicketWriter(down_store, jobs.make_enqueue(rq_queue), tmp_path / "a-file" / "tickets.jsonl")
    snap = make_snapshot()
    assert writer.save(snap) == WriteOutcome.deferred == "deferred"
    assert rq_queue.count == 1
    jobs.configure(store)
    run_worker(rq_queue)
    assert store.get(snap.number).revision == 1


def test_replay_sets_aside_what_can_never_be_saved_and_keeps_going(store, down_store, tmp_path):
    path = tmp_path / "spool" / "tickets.jsonl"
    spooling = TicketWriter(down_store, None, path)
    good = make_snapshot(number="2026112800001", uniqueid="1.1")
    clash = make_snapshot(number="2026112800002", uniqueid="1.2", created_at=T0 + timedelta(hours=1))
    later = make_snapshot(number="2026112800003", uniqueid="1.3")
    for snap in (good, clash, later):
        assert spooling.save(snap) == "spooled"
    with open(path, "a") as fh:
        fh.write("this is not json\n")
    store.save(make_snapshot(number="2026112800002", uniqueid="1.9"))  # number 2 now belongs to another call

    # The database is still down for this writer: everything stays, in order.
    assert spooling.replay_spool() == (0, 4)
    assert [json.loads(line)["number"] for line in spool_lines(spooling)[:3]] == [
        "2026112800001", "2026112800002", "2026112800003"]

    # The database is back: the clash and the junk line go aside for an operator (never deleted), the
    # line after the clash is not held up by it.
    replaying = TicketWriter(store, None, path)
    assert replaying.replay_spool() == (4, 0)
    assert store.get("2026112800001") is not None and store.get("2026112800003") is not None
    rejected = [json.loads(line) for line in (tmp_path / "spool" / "tickets.jsonl.rejected").read_text().splitlines()]
    assert [json.loads(r["line"])["number"] for r in rejected[:1]] == ["2026112800002"]
    assert "already belongs" in rejected[0]["error"] and CALLER_DIGITS not in rejected[0]["error"]
    assert rejected[1]["line"] == "this is not json"


def test_replay_keeps_a_line_that_fails_otherwise_and_goes_on(store, tmp_path):
    path = tmp_path / "spool" / "tickets.jsonl"

    class Flaky:
        """The real store, except that one ticket fails with an unexpected error."""

        def save(self, snap):
            if snap.number == "2026112800001":
                raise RuntimeError("a bug")
            return store.save(snap)

    writer = TicketWriter(Flaky(), None, path)
    for i in (1, 2):
        writer.spool.append(make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}").to_dict())
    assert writer.replay_spool() == (1, 1)
    assert store.get("2026112800002") is not None
    assert [json.loads(line)["number"] for line in spool_lines(writer)] == ["2026112800001"]
    assert writer.replay_spool() == (0, 1)


def test_when_nothing_can_keep_the_snapshot_the_caller_is_told(down_store, redis_down, tmp_path):
    (tmp_path / "a-file").write_text("")
    writer = TicketWriter(down_store, jobs.make_enqueue(Queue("x", connection=redis_down)),
                          tmp_path / "a-file" / "tickets.jsonl")
    with pytest.raises(TicketNotKept, match="ticket 2026112800001 revision 1 could not be saved, spooled or queued"):
        writer.save(make_snapshot())


def _all_text(records) -> str:
    """Everything a log record holds: its message, every field (``extra=`` ones too) and its exception,
    unredacted (hotline.logs may redact; this code must not emit a number in the first place)."""
    formatter = logging.Formatter()
    out = []
    for record in records:
        out.append(record.getMessage())
        out.append(repr({k: v for k, v in record.__dict__.items() if k not in ("exc_info", "msg", "args")}))
        out.append(repr(record.args))
        if record.exc_info:
            out.append(formatter.formatException(record.exc_info))
    return "\n".join(out)


@postgres_only
def test_no_branch_logs_the_callers_number(pg_proxy, redis_down, rq_queue, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    writer = writer_for(proxied_store, rq_queue, tmp_path)
    (tmp_path / "a-file").write_text("")
    last_resort = TicketWriter(proxied_store, jobs.make_enqueue(rq_queue), tmp_path / "a-file" / "tickets.jsonl")
    snap = make_snapshot()
    writer.save(snap)
    proxy.stop()
    assert writer.save(final_of(snap)) == "spooled"
    assert last_resort.save(final_of(snap)) == "deferred"
    job = rq_queue.fetch_job(rq_queue.job_ids[0])
    run_worker(rq_queue)  # fails (database down): RQ logs the job, its arguments and the traceback
    proxy.start()
    writer.replay_spool()
    proxied_store.save(make_snapshot(number="2026112800009", uniqueid="2.2"))
    clash = make_snapshot(number="2026112800009", uniqueid="2.3", created_at=T0 + timedelta(hours=1))
    writer.breaker.succeeded()
    writer.save(clash)  # a clash: spooled, then set aside by the replay
    writer.replay_spool()
    assert "spooled" in caplog.text and "exception raised while executing" in caplog.text  # the branches did log
    text = _all_text(caplog.records)
    assert CALLER_DIGITS not in text and "8613800138000" not in text
    result = job.latest_result()
    for value in (job.id, job.description, repr(job.args), repr(job.kwargs), str(result and result.exc_string)):
        assert CALLER_DIGITS not in value


@postgres_only
def test_failed_jobs_log_no_number(pg_proxy, rq_queue, caplog):
    caplog.set_level(logging.DEBUG)
    proxy, proxied_store = pg_proxy
    jobs.configure(proxied_store)
    proxy.stop()
    job = jobs.enqueue_snapshot(rq_queue, make_snapshot().to_dict(), retry=Retry(max=1))
    run_worker(rq_queue)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    text = _all_text(caplog.records)
    assert "StorageUnavailable" in text and CALLER_DIGITS not in text
    assert CALLER_DIGITS not in (job.latest_result().exc_string or "") and CALLER_DIGITS not in job.description


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


# -- a hung database, the circuit breaker, saving in the background, shutting down ---------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class CountingStore:
    """A store that counts saves and fails them as unavailable while ``down`` is set."""

    def __init__(self, real):
        self.real = real
        self.down = True
        self.calls = 0

    def save(self, snap):
        self.calls += 1
        if self.down:
            raise StorageUnavailable("the ticket database cannot be reached (test)")
        return self.real.save(snap)


def test_after_a_failure_saves_skip_the_database_for_a_pause(store, tmp_path):
    clock, counting = FakeClock(), CountingStore(store)
    writer = TicketWriter(counting, None, tmp_path / "spool" / "tickets.jsonl", db_pause=5, clock=clock)
    snaps = [make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}") for i in range(1, 6)]
    assert writer.save(snaps[0]) == "spooled" and counting.calls == 1
    assert writer.save(snaps[1]) == "spooled" and counting.calls == 1  # the breaker is open: no wait
    clock.now += 5
    assert writer.save(snaps[2]) == "spooled" and counting.calls == 2  # one trial after the pause, failed
    assert writer.save(snaps[3]) == "spooled" and counting.calls == 2
    counting.down = False
    assert writer.replay_spool() == (4, 0)  # the replayer's probe finds the database back...
    assert not writer.breaker.is_open
    assert writer.save(snaps[4]) == "saved"  # ...and saves go to it directly again
    assert tickets_in(store) == (5, 5)


def bounded_store(proxy, database_url):
    """A store through ``proxy`` whose engine gives up on a silent server within a second or two."""
    engine = make_engine(proxy.url_for(database_url), statement_timeout=1, io_timeout=1, connect_timeout=2,
                         pool_timeout=1)
    return engine, TicketStore(make_session_factory(engine))


@postgres_only
def test_a_hung_database_fails_a_save_in_bounded_time(pg_proxy, database_url, tmp_path):
    proxy, _ = pg_proxy
    engine, hung_store = bounded_store(proxy, database_url)
    try:
        writer = TicketWriter(hung_store, None, tmp_path / "spool" / "tickets.jsonl")
        first = make_snapshot()
        assert writer.save(first) == "saved"  # a pooled connection, alive
        proxy.hold()
        second = make_snapshot(number="2026112800002", uniqueid="1.2")
        assert run_bounded(lambda: writer.save(second)) == "spooled"
        assert writer.breaker.is_open
        third = make_snapshot(number="2026112800003", uniqueid="1.3")
        assert run_bounded(lambda: writer.save(third)) == "spooled"  # the pause: not even tried
        proxy.release()
        assert writer.replay_spool() == (2, 0)
        assert {hung_store.get(n).revision for n in ("2026112800002", "2026112800003")} == {1}
    finally:
        proxy.release()
        engine.dispose()


@postgres_only
def test_pending_saves_against_a_hung_database_are_spooled_on_close(pg_proxy, database_url, tmp_path):
    proxy, healthy = pg_proxy
    engine, hung_store = bounded_store(proxy, database_url)
    path = tmp_path / "spool" / "tickets.jsonl"
    try:
        writer = TicketWriter(hung_store, None, path, threads=3)
        writer.save(make_snapshot(number="2026112800999", uniqueid="9.9"))  # warm the pool
        proxy.hold()
        snaps = [make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}") for i in range(1, 41)]
        for snap in snaps:
            writer.save_later(snap)
        for snap in snaps:
            writer.save_later(final_of(snap))
        writer.close(timeout=0.2)  # SIGTERM: no time to wait for a database that does not answer
        spooled = {(json.loads(line)["number"], json.loads(line)["revision"]) for line in spool_lines(writer)}
        # Each ticket's newest revision; revision 1 too where it was being saved (a waiting one was replaced).
        assert spooled >= {(s.number, 2) for s in snaps}
        assert writer.pending() <= 3 * BATCH_SIZE  # at most the batches still stuck in the database, spooled all the same

        writer.save_later(make_snapshot(number="2026112800500", uniqueid="5.0"))  # after close: spooled at once
        assert "2026112800500" in {json.loads(line)["number"] for line in spool_lines(writer)}
    finally:
        proxy.release()
    # A later process (the database answers) replays the spool: each ticket stored exactly once, newest
    # revision, duplicates in the spool doing no harm.
    assert TicketWriter(healthy, None, path).replay_spool()[1] == 0
    assert tickets_in(healthy) == (42, 42)
    assert {healthy.get(s.number).revision for s in snaps} == {2}
    engine.dispose()


def test_save_later_saves_in_the_background(store, tmp_path):
    writer = TicketWriter(store, None, tmp_path / "spool" / "tickets.jsonl", threads=2)
    snaps = [make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}") for i in range(1, 21)]
    for snap in snaps:
        assert writer.save_later(snap) is None
    assert writer.close(timeout=30) == 0  # the database answers: nothing left to spool
    assert tickets_in(store) == (20, 20)
    assert not writer.spool.has_pending()


def test_save_later_spools_at_once_when_its_queue_is_full(store, tmp_path):
    gate = threading.Event()

    class Slow:
        def save(self, snap):
            gate.wait(30)
            return store.save(snap)

    writer = TicketWriter(Slow(), None, tmp_path / "spool" / "tickets.jsonl", threads=1, queue_size=1)
    snaps = [make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}") for i in range(1, 4)]
    writer.save_later(snaps[0])
    for _ in range(200):  # the one worker takes the first (bounded wait, no timing asserted)
        if writer.pending() == 1 and not writer._pending:
            break
        time.sleep(0.01)
    writer.save_later(snaps[1])  # waits in the queue
    writer.save_later(snaps[2])  # the queue is full: spooled on the caller's thread
    assert [json.loads(line)["number"] for line in spool_lines(writer)] == [snaps[2].number]
    gate.set()
    writer.close(timeout=30)
    assert store.get(snaps[0].number) and store.get(snaps[1].number) and store.get(snaps[2].number) is None


def test_save_later_never_raises(down_store, tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    writer = TicketWriter(down_store, None, tmp_path / "a-file" / "tickets.jsonl", threads=1)
    writer.close()
    writer.save_later(make_snapshot())  # closed, database down, disk refusing, no queue: logged, not raised
    assert "THE TICKET IS LOST" in caplog.text


@postgres_only
def test_the_replayer_resumes_deferred_saves_once_the_database_is_back(pg_proxy, tmp_path):
    proxy, proxied_store = pg_proxy
    writer = TicketWriter(proxied_store, None, tmp_path / "spool" / "tickets.jsonl")
    proxy.stop()
    snap = make_snapshot()
    assert writer.save(snap) == "spooled"
    thread = writer.start_replaying(0.05)
    assert writer.start_replaying(0.05) is thread  # one replayer per writer
    proxy.start()
    for _ in range(600):  # bounded: up to ~30 s on a very slow machine
        if not writer.spool.has_pending() and not writer.breaker.is_open:
            break
        time.sleep(0.05)
    assert proxied_store.get(snap.number) is not None
    assert not writer.breaker.is_open  # the replay's save closed the breaker
    writer.close()
    thread.join(30)
    assert not thread.is_alive()


def test_close_is_idempotent_and_drain_spools_only_what_is_pending(store, tmp_path):
    writer = TicketWriter(store, None, tmp_path / "spool" / "tickets.jsonl")
    assert writer.drain() == 0 and writer.close() == 0 and writer.close() == 0
    assert not writer.spool.has_pending()


def test_spool_knows_its_highest_number_of_a_day(tmp_path):
    spool = SnapshotSpool(tmp_path / "spool" / "tickets.jsonl")
    assert not spool.has_pending() and spool.highest_number("20261128", 14) == 0
    for number in ("2026112800007", "2026112800042", "202611289000077", "2026112900050"):
        spool.append(make_snapshot(number=number).to_dict())
    assert spool.has_pending()
    assert spool.highest_number("20261128", 14) == 42
    assert spool.highest_number("20261128", 15) == 9000077


def test_a_snapshot_with_a_line_separator_in_a_field_replays_whole(store, tmp_path):
    writer = TicketWriter(store, None, tmp_path / "spool" / "tickets.jsonl")
    snap = make_snapshot(ivr_path="language:1\u2028main:2\x85")
    writer.spool.append(snap.to_dict())
    assert writer.spool.pending() == 1
    assert writer.replay_spool() == (1, 0)
    assert store.get(snap.number).ivr_path == snap.ivr_path


def test_a_replay_while_the_database_is_down_leaves_the_spool_file_alone(down_store, tmp_path):
    writer = TicketWriter(down_store, None, tmp_path / "spool" / "tickets.jsonl")
    for i in range(1, 4):
        assert writer.save(make_snapshot(number=f"2026112800{i:03d}", uniqueid=f"1.{i}")) == "spooled"
    before = writer.spool.path.stat()
    assert writer.replay_spool() == (0, 3)
    after = writer.spool.path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_saves_waiting_together_go_in_one_transaction_and_a_clash_falls_back_to_one_by_one(store, tmp_path):
    """A burst is saved in batches; one snapshot that clashes costs only itself (it is set aside), not its batch."""
    from tests.orders_fixtures import T0 as t0

    store.save(make_snapshot("2026112800401"))
    batches = []
    real = store.save_many

    def counting(snapshots):
        batches.append(len(snapshots))
        return real(snapshots)

    store.save_many = counting
    writer = TicketWriter(store, None, tmp_path / "spool.jsonl", threads=1)
    gate = threading.Event()
    original_save = store.save

    def slow_first(snapshot):  # holds the only worker thread so that the others pile up behind it
        gate.wait(10)
        return original_save(snapshot)

    store.save = slow_first
    writer.save_later(make_snapshot("2026112800400"))
    clash = make_snapshot("2026112800401", created_at=t0 + timedelta(hours=1), uniqueid="1764297000.888")
    for i in range(10):
        writer.save_later(make_snapshot(f"20261128005{i:02d}"))
    writer.save_later(clash)
    store.save = original_save
    gate.set()
    assert writer.wait_idle(20)
    writer.close()
    assert batches and max(batches) > 1  # the burst went in batches
    assert all(store.get(f"20261128005{i:02d}") is not None for i in range(10))
    assert store.get("2026112800400") is not None
    assert store.get("2026112800401").created_at == t0  # the clash changed nothing...
    assert writer.spool.pending() == 1  # ...and save's own path kept it (a replay sets it aside for an operator)



def _held_writer(store_, tmp_path, threads=1):
    """A writer whose worker threads wait at a gate before each save, so that snapshots pile up behind them."""
    gate = threading.Event()
    saving: list[str] = []  # numbers being saved now, one entry per save in progress
    overlaps: list[str] = []
    saved: list[tuple[str, int]] = []
    lock = threading.Lock()

    class Held:
        def _run(self, snapshots, save):
            gate.wait(30)
            with lock:
                overlaps.extend(s.number for s in snapshots if s.number in saving)
                saving.extend(s.number for s in snapshots)
            try:
                return save()
            finally:
                with lock:
                    for s in snapshots:
                        saving.remove(s.number)
                        saved.append((s.number, s.revision))

        def save(self, snapshot):
            return self._run([snapshot], lambda: store_.save(snapshot))

        def save_many(self, snapshots):
            return self._run(snapshots, lambda: store_.save_many(snapshots))

    writer = TicketWriter(Held(), None, tmp_path / "spool" / "tickets.jsonl", threads=threads)
    return writer, gate, saved, overlaps


def wait_until(predicate, rounds=500):
    for _ in range(rounds):  # bounded; no timing asserted
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_newer_revision_replaces_the_one_still_waiting(store, tmp_path):
    writer, gate, saved, _ = _held_writer(store, tmp_path)
    first = make_snapshot("2026112800501", uniqueid="1.501")
    writer.save_later(first)  # the one worker takes it and waits at the gate
    assert wait_until(lambda: not writer._pending)
    opening = make_snapshot("2026112800502", uniqueid="1.502", confidential=True)
    writer.save_later(opening)
    writer.save_later(final_of(opening))
    writer.save_later(opening)  # a late retry of the older revision changes nothing
    assert writer.pending() == 2
    gate.set()
    assert writer.wait_idle(20)
    writer.close()
    assert ("2026112800502", 1) not in saved and ("2026112800502", 2) in saved  # one save, the newest
    kept = store.get("2026112800502")
    assert kept.revision == 2 and kept.status == "queued" and kept.confidential
    assert store.get("2026112800501") is not None


def test_confidentiality_of_a_replaced_revision_is_kept(store, tmp_path):
    writer, gate, _saved, _ = _held_writer(store, tmp_path)
    writer.save_later(make_snapshot("2026112800511", uniqueid="1.511"))
    assert wait_until(lambda: not writer._pending)
    opening = make_snapshot("2026112800512", uniqueid="1.512", confidential=True)
    writer.save_later(opening)
    writer.save_later(dataclasses.replace(final_of(opening), confidential=False))
    gate.set()
    assert writer.wait_idle(20)
    writer.close()
    assert store.get("2026112800512").confidential


def test_two_tickets_given_one_number_are_not_merged(store, tmp_path):
    writer, gate, _saved, _ = _held_writer(store, tmp_path)
    writer.save_later(make_snapshot("2026112800521", uniqueid="1.521"))
    assert wait_until(lambda: not writer._pending)
    one = make_snapshot("2026112800522", uniqueid="1.522")
    other = make_snapshot("2026112800522", uniqueid="1.999", created_at=T0 + timedelta(minutes=5))
    writer.save_later(one)
    writer.save_later(final_of(other))  # not the same ticket: kept aside, not replacing the first
    assert [json.loads(line)["uniqueid"] for line in spool_lines(writer)] == ["1.999"]
    gate.set()
    assert writer.wait_idle(20)
    writer.close()
    assert store.get("2026112800522").created_at == T0


def test_two_revisions_of_one_ticket_are_never_saved_at_once(store, tmp_path):
    writer, gate, saved, overlaps = _held_writer(store, tmp_path, threads=4)
    opening = make_snapshot("2026112800531", uniqueid="1.531")
    writer.save_later(opening)
    assert wait_until(lambda: not writer._pending)  # a worker holds revision 1
    writer.save_later(final_of(opening))  # three idle workers, but revision 1 is being saved
    for i in range(10):
        writer.save_later(make_snapshot(f"20261128006{i:02d}", uniqueid=f"1.6{i:02d}"))
    gate.set()
    assert writer.wait_idle(20)
    writer.close()
    assert overlaps == []
    assert [r for n, r in saved if n == "2026112800531"] == [1, 2]
    assert store.get("2026112800531").revision == 2


def test_saves_linger_to_share_a_transaction_and_a_full_batch_goes_at_once(store, tmp_path):
    """A save waits up to ``linger`` for others; a full batch does not wait (an hour's linger proves it)."""
    from orders.writer import BATCH_SIZE

    batches = []
    real = store.save_many
    store.save_many = lambda snapshots: batches.append(len(snapshots)) or real(snapshots)
    writer = TicketWriter(store, None, tmp_path / "spool.jsonl", linger=3600)
    try:
        for i in range(BATCH_SIZE - 1):
            writer.save_later(make_snapshot(f"20261128007{i:02d}", uniqueid=f"1764297000.7{i:02d}"))
        assert writer.pending() == BATCH_SIZE - 1 and not batches  # lingering: nothing saved yet
        writer.save_later(make_snapshot("2026112800799", uniqueid="1764297000.799"))
        assert writer.wait_idle(10)
        assert batches == [BATCH_SIZE] and store.get("2026112800700") is not None
    finally:
        writer.close()


def test_closing_saves_what_lingers_at_once(store, tmp_path):
    writer = TicketWriter(store, None, tmp_path / "spool.jsonl", linger=3600)
    for i in range(3):
        writer.save_later(make_snapshot(f"20261128008{i:02d}", uniqueid=f"1764297000.8{i:02d}"))
    assert writer.close(timeout=10) == 0  # saved by the workers, nothing left to spool
    assert all(store.get(f"20261128008{i:02d}") is not None for i in range(3))


def test_without_a_linger_a_save_goes_at_once(store, tmp_path):
    writer = TicketWriter(store, None, tmp_path / "spool.jsonl", linger=0)
    try:
        writer.save_later(make_snapshot("2026112800900"))
        assert writer.wait_idle(10) and store.get("2026112800900") is not None
    finally:
        writer.close()
