"""Ticket numbers: sequential per local day, unique across threads, safe after Redis loses its data."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from orders.errors import TicketNumberUnavailable
from orders.models import TicketSequence
from orders.ticket_numbers import KEY_TTL_SECONDS, TicketNumberAllocator, is_ticket_number
from tests.orders_fixtures import make_snapshot, store  # noqa: F401

# 17:30 UTC on the 27th is 01:30 on the 28th in Shanghai: the day is the hotline's, not UTC's.
NOW = datetime(2026, 11, 27, 17, 30, tzinfo=timezone.utc)


@pytest.fixture
def allocator(redis_conn, redis_prefix, session_factory):
    return TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix)


def test_sequential_numbers_of_the_local_day(allocator, redis_conn, redis_prefix):
    assert [allocator.next(NOW) for _ in range(3)] == ["2026112800001", "2026112800002", "2026112800003"]
    assert allocator.next(datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)) == "2026112900001"
    ttl = redis_conn.ttl(redis_prefix + "ticket-seq:20261128")
    assert 0 < ttl <= KEY_TTL_SECONDS
    assert all(is_ticket_number(n) for n in ("2026112800001", "20261128123456", "202611289000001"))
    assert not any(is_ticket_number(n) for n in ("123", "2026132800001", "20261128000a1", ""))


def test_naive_time_is_refused(allocator):
    with pytest.raises(ValueError, match="time zone"):
        allocator.next(datetime(2026, 11, 28, 10, 0))


def test_unique_across_threads(allocator):
    numbers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def take():
        barrier.wait()
        mine = [allocator.next(NOW) for _ in range(25)]
        with lock:
            numbers.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(numbers) == 200 and len(set(numbers)) == 200
    assert sorted(numbers) == [f"20261128{i:05d}" for i in range(1, 201)]


def test_seeded_from_the_database_after_redis_lost_its_key(redis_conn, redis_prefix, session_factory, store):
    for i, seq in enumerate((40, 42, 7)):
        store.save(make_snapshot(number=f"20261128{seq:05d}", uniqueid=f"9.{i}"))
    store.save(make_snapshot(number="2026112900050", uniqueid="9.9"))  # another day: not counted
    store.save(make_snapshot(number="202611289000077", uniqueid="9.8"))  # the database range: not counted
    exact = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, reseed_gap=0)
    assert exact.next(NOW) == "2026112800043"
    redis_conn.delete(redis_prefix + "ticket-seq:20261128")  # Redis restarted empty
    store.save(make_snapshot(number="2026112800043", uniqueid="9.7"))
    assert exact.next(NOW) == "2026112800044"
    redis_conn.delete(redis_prefix + "ticket-seq:20261128")
    default = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix)
    assert default.next(NOW) == "2026112801044"  # skips ahead of numbers given but not yet written


def test_six_digit_days_are_seeded_right(redis_conn, redis_prefix, session_factory, store):
    store.save(make_snapshot(number="2026112899999", uniqueid="8.1"))
    store.save(make_snapshot(number="20261128100001", uniqueid="8.2"))
    exact = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, reseed_gap=0)
    assert exact.next(NOW) == "20261128100002"


def test_database_fallback_when_redis_is_down(redis_down, session_factory):
    allocator = TicketNumberAllocator(redis_down, session_factory, key_prefix="unused:")
    assert [allocator.next(NOW) for _ in range(2)] == ["202611289000001", "202611289000002"]
    with session_factory() as session:
        assert session.get(TicketSequence, "20261128").last_value == 2


def test_database_fallback_is_unique_across_threads(redis_down, session_factory):
    allocator = TicketNumberAllocator(redis_down, session_factory, key_prefix="unused:")
    numbers: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def take():
        barrier.wait()
        mine = [allocator.next(NOW) for _ in range(10)]
        with lock:
            numbers.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == [f"202611289{i:06d}" for i in range(1, 61)]


def test_redis_and_database_ranges_never_meet(redis_conn, redis_prefix, session_factory, redis_down):
    up = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix)
    down = TicketNumberAllocator(redis_down, session_factory, key_prefix=redis_prefix)
    numbers = [up.next(NOW), down.next(NOW), up.next(NOW), down.next(NOW)]
    assert numbers == ["2026112800001", "202611289000001", "2026112800002", "202611289000002"]


def test_redis_sequence_overflow_moves_to_the_database(allocator, redis_conn, redis_prefix):
    redis_conn.set(redis_prefix + "ticket-seq:20261128", 999_999)
    assert allocator.next(NOW) == "202611289000001"


def test_nothing_answers(redis_down, tmp_path):
    from base.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory: cannot be opened
    try:
        allocator = TicketNumberAllocator(redis_down, make_session_factory(engine))
        with pytest.raises(TicketNumberUnavailable, match="Redis and the database are both unavailable"):
            allocator.next(NOW)
    finally:
        engine.dispose()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_after_a_redis_failure_the_database_numbers_for_a_while(redis_conn, redis_prefix, session_factory):
    class FlakyRedis:
        """The real Redis, except that it fails while ``down`` is set (as during an outage)."""

        def __init__(self):
            self.down = False
            self.calls = 0

        def register_script(self, script):
            real = redis_conn.register_script(script)

            def run(**kwargs):
                self.calls += 1
                if self.down:
                    raise redis_lib.ConnectionError("Redis is down")
                return real(**kwargs)

            return run

        def set(self, *args, **kwargs):
            return redis_conn.set(*args, **kwargs)

    flaky, clock = FlakyRedis(), FakeClock()
    allocator = TicketNumberAllocator(flaky, session_factory, key_prefix=redis_prefix, redis_pause=10, clock=clock)
    assert allocator.next(NOW) == "2026112800001"
    flaky.down = True
    assert allocator.next(NOW) == "202611289000001"
    calls = flaky.calls
    flaky.down = False
    clock.now += 9
    assert allocator.next(NOW) == "202611289000002"  # still pausing: Redis not even asked
    assert flaky.calls == calls
    clock.now += 2
    assert allocator.next(NOW) == "2026112800002"


# -- never twice: the floor ------------------------------------------------------------------------------

def test_a_counter_set_back_below_what_was_handed_out_jumps_ahead(allocator, redis_conn, redis_prefix, caplog):
    numbers = [allocator.next(NOW) for _ in range(20)]
    assert numbers[-1] == "2026112800020"
    redis_conn.set(redis_prefix + "ticket-seq:20261128", 5)  # a Redis back from an old state
    after = [allocator.next(NOW) for _ in range(3)]
    assert after == ["2026112801020", "2026112801021", "2026112801022"]  # floor 20 + reseed gap, then on
    assert "jumped to 1020" in caplog.text
    assert 0 < redis_conn.ttl(redis_prefix + "ticket-seq:20261128") <= KEY_TTL_SECONDS


# -- blocks: a process takes several Redis numbers at a time ---------------------------------------------


def _counting_script(allocator):
    """Count the allocator's trips to Redis."""
    calls = []
    script = allocator._next_sequence
    allocator._next_sequence = lambda **kw: calls.append(1) or script(**kw)
    return calls


def test_a_block_is_handed_out_without_asking_redis_again(redis_conn, redis_prefix, session_factory):
    allocator = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, block=4)
    trips = _counting_script(allocator)
    assert [allocator.next(NOW) for _ in range(9)] == [f"20261128{i:05d}" for i in range(1, 10)]
    assert len(trips) == 4  # the new day's counter is seeded first, then 1-4, 5-8, 9-12
    assert int(redis_conn.get(redis_prefix + "ticket-seq:20261128")) == 12


def test_processes_with_blocks_never_share_a_number(redis_conn, redis_prefix, session_factory):
    a, b = (TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, block=3) for _ in range(2))
    given = [x.next(NOW) for _ in range(7) for x in (a, b)]
    assert len(set(given)) == len(given) == 14
    assert given[:4] == ["2026112800001", "2026112800004", "2026112800002", "2026112800005"]  # unique, not in order


def test_a_new_day_takes_a_new_block(redis_conn, redis_prefix, session_factory):
    allocator = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, block=5)
    assert allocator.next(NOW) == "2026112800001"
    tomorrow = datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)
    assert [allocator.next(tomorrow) for _ in range(2)] == ["2026112900001", "2026112900002"]
    assert allocator.next(NOW) == "2026112800006"  # back to the 28th (a late call): a fresh block, a gap, no repeat


def test_a_block_below_the_floor_jumps_whole(redis_conn, redis_prefix, session_factory, caplog):
    allocator = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, block=4)
    assert [allocator.next(NOW) for _ in range(8)][-1] == "2026112800008"
    redis_conn.set(redis_prefix + "ticket-seq:20261128", 6)  # back from an old state: 7-10 would repeat 7 and 8
    assert [allocator.next(NOW) for _ in range(5)] == [f"20261128{i:05d}" for i in range(1008, 1013)]
    assert "jumped to 1011" in caplog.text


@pytest.mark.parametrize("block", [0, 101, True, 2.5])
def test_a_block_size_out_of_range_is_refused(redis_conn, session_factory, block):
    with pytest.raises(ValueError, match="block"):
        TicketNumberAllocator(redis_conn, session_factory, block=block)


def test_the_spool_counts_in_the_floor(redis_conn, redis_prefix, session_factory, tmp_path):
    from orders.spool import SnapshotSpool

    spool = SnapshotSpool(tmp_path / "spool" / "tickets.jsonl")
    spool.append(make_snapshot(number="2026112800500").to_dict())  # written while the database was down
    spool.append(make_snapshot(number="202611289000900").to_dict())  # another range: not counted
    allocator = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, reseed_gap=10,
                                      spool=spool.path)
    assert allocator.next(NOW) == "2026112800511"  # the key was missing: seeded above the spool's 500
    redis_conn.set(redis_prefix + "ticket-seq:20261128", 3)
    other = TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix, reseed_gap=10,
                                  spool=spool)
    assert other.next(NOW) == "2026112800510"  # a new process: its floor is the spool's 500 (+ the gap)


def _stream(allocators, spool, count, numbers, lock, stop):
    """Take numbers round-robin from ``allocators`` (different processes' worth), spooling each ticket
    as a call would while the database is down."""
    for i in range(count):
        if stop.is_set():
            return
        allocator = allocators[i % len(allocators)]
        number = allocator.next(NOW)
        spool.append({"number": number})
        with lock:
            numbers.append(number)
        time.sleep(0.002)


def _two_processes(server, session_factory, tmp_path, reseed_gap=10, block=1):
    from orders.spool import SnapshotSpool

    spool = SnapshotSpool(tmp_path / "spool" / "tickets.jsonl")
    allocators = [
        TicketNumberAllocator(server.client(retry=Retry(NoBackoff(), 1)), session_factory, key_prefix="t:",
                              reseed_gap=reseed_gap, redis_pause=0.05, spool=spool.path, block=block)
        for _ in range(2)
    ]
    return spool, allocators


def _run_streams(streams, until):
    numbers: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    threads = [threading.Thread(target=_stream, args=(allocs, spool, 400, numbers, lock, stop))
               for allocs, spool in streams]
    for thread in threads:
        thread.start()
    try:
        until(numbers, lock)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    return numbers


def _wait_for(numbers, lock, count):
    for _ in range(3000):  # bounded: 30 s at most
        with lock:
            if len(numbers) >= count:
                return
        time.sleep(0.01)


@pytest.mark.parametrize("block", [1, 4])  # blocks of 4: two processes hold 8 < the gap of 10
def test_no_number_twice_across_a_redis_restarted_empty(session_factory, block, tmp_path):
    from tests.servers import throwaway_redis

    with throwaway_redis(appendonly=True) as server:
        spool, allocators = _two_processes(server, session_factory, tmp_path, block=block)

        def chaos(numbers, lock):
            _wait_for(numbers, lock, 60)
            server.restart_empty()  # kill -9, no data: the key is gone
            _wait_for(numbers, lock, 140)
            server.restart_empty()
            _wait_for(numbers, lock, 200)

        numbers = _run_streams([(allocators, spool)] * 2, chaos)
    assert len(numbers) >= 200
    assert len(set(numbers)) == len(numbers), sorted(n for n in numbers if numbers.count(n) > 1)
    assert all(is_ticket_number(n) for n in numbers)


@pytest.mark.parametrize("block", [1, 4])  # blocks of 4: two processes hold 8 < the gap of 10
def test_no_number_twice_across_a_redis_back_from_an_old_state(session_factory, block, tmp_path, caplog):
    from tests.servers import throwaway_redis

    with throwaway_redis(appendonly=True) as server:
        spool, allocators = _two_processes(server, session_factory, tmp_path, block=block)

        def chaos(numbers, lock):
            _wait_for(numbers, lock, 40)
            old = server.snapshot()  # an old backup (or an RDB a while back)
            _wait_for(numbers, lock, 120)
            server.restart_from(old)  # kill -9, then back from the old copy: the counter went back
            _wait_for(numbers, lock, 200)

        numbers = _run_streams([(allocators, spool)] * 2, chaos)
    assert len(numbers) >= 200
    assert len(set(numbers)) == len(numbers), sorted(n for n in numbers if numbers.count(n) > 1)


@pytest.mark.parametrize("block", [1, 20])  # two blocks of 20: 40 < the gap of 50
def test_two_processes_that_wrote_nothing_anywhere_never_share_a_number(session_factory, block, tmp_path):
    """Two processes' allocators, no ticket in the database or the spool, Redis back from an old state
    between two calls: the floor each one keeps covers its own numbers, the reseed gap the other's."""
    from tests.servers import throwaway_redis

    with throwaway_redis(appendonly=True) as server:
        _, (a, b) = _two_processes(server, session_factory, tmp_path, reseed_gap=50, block=block)
        a._spool = b._spool = None  # no spool either: only what each process handed out
        given = [x.next(NOW) for _ in range(30) for x in (a, b)]
        old = server.snapshot()
        given += [x.next(NOW) for _ in range(10) for x in (a, b)]
        server.restart_from(old)
        given += [x.next(NOW) for _ in range(30) for x in (a, b)]
    assert len(set(given)) == len(given)


# -- Redis and the database both down: the local counter ------------------------------------------------

@pytest.fixture
def nothing_answers(redis_down, tmp_path):
    from base.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory: cannot be opened
    yield redis_down, make_session_factory(engine)
    engine.dispose()


def test_local_numbers_when_redis_and_the_database_are_down(nothing_answers, tmp_path):
    from orders.snapshot import TicketSnapshot

    redis_down_, session_factory_ = nothing_answers
    local = tmp_path / "ticket-numbers"
    allocator = TicketNumberAllocator(redis_down_, session_factory_, local_dir=local, node_id=3)
    assert [allocator.next(NOW) for _ in range(2)] == ["202611288030001", "202611288030002"]
    restarted = TicketNumberAllocator(redis_down_, session_factory_, local_dir=local, node_id=3)
    assert restarted.next(NOW) == "202611288030003"  # the counter survives a restart
    assert restarted.next(datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)) == "202611298030001"
    assert is_ticket_number("202611288030003")
    TicketSnapshot(number="202611288030003", revision=1, caller_raw="", caller_e164=None, caller_kind="withheld",
                   created_at=NOW)
    with pytest.raises(ValueError, match="node_id"):
        TicketNumberAllocator(redis_down_, session_factory_, local_dir=local, node_id=100)


def test_local_numbers_are_unique_across_processes(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from orders.ticket_numbers import LocalTicketCounter\n"
        "counter = LocalTicketCounter(sys.argv[1])\n"
        "print(' '.join(str(counter.next('20261128')) for _ in range(100)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "local")], stdout=subprocess.PIPE,
                              text=True, cwd=str(Path(__file__).resolve().parent.parent)) for _ in range(3)]
    taken = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        taken += [int(x) for x in out.split()]
    assert sorted(taken) == list(range(1, 301))


def test_no_number_only_when_the_disk_refuses_too(nothing_answers, tmp_path):
    redis_down_, session_factory_ = nothing_answers
    (tmp_path / "a-file").write_text("")
    allocator = TicketNumberAllocator(redis_down_, session_factory_, local_dir=tmp_path / "a-file" / "numbers")
    with pytest.raises(TicketNumberUnavailable, match="the local counter are all unavailable"):
        allocator.next(NOW)


def test_after_a_database_failure_the_local_counter_numbers_for_a_while(redis_down, session_factory, tmp_path):
    from orders.errors import StorageUnavailable

    clock = FakeClock()
    allocator = TicketNumberAllocator(redis_down, session_factory, local_dir=tmp_path / "n", redis_pause=10,
                                      db_pause=10, clock=clock)
    calls = []

    def hung(day):
        calls.append(day)
        raise StorageUnavailable("the ticket database did not answer (test)")

    allocator._sequences.next_fallback = hung
    assert allocator.next(NOW) == "202611288000001" and len(calls) == 1
    assert allocator.next(NOW) == "202611288000002" and len(calls) == 1  # paused: not even asked
    clock.now += 11
    assert allocator.next(NOW) == "202611288000003" and len(calls) == 2


def test_a_locally_numbered_ticket_reaches_the_database_through_the_spool(nothing_answers, store, tmp_path):
    from orders.store import TicketStore
    from orders.writer import TicketWriter

    redis_down_, down_sessions = nothing_answers
    allocator = TicketNumberAllocator(redis_down_, down_sessions, local_dir=tmp_path / "n", node_id=7)
    number = allocator.next(NOW)
    assert number == "202611288070001"
    spool_path = tmp_path / "spool" / "tickets.jsonl"
    during = TicketWriter(TicketStore(down_sessions), None, spool_path)
    assert during.save(make_snapshot(number=number, uniqueid="7.1")) == "spooled"
    assert TicketWriter(store, None, spool_path).replay_spool() == (1, 0)  # the database is back
    assert store.get(number).revision == 1
