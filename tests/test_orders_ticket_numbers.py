"""Ticket numbers: sequential per local day, unique across threads, safe after Redis loses its data."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from orders.errors import TicketNumberUnavailable
from orders.models import TicketSequence
from orders.ticket_numbers import KEY_TTL_SECONDS, TicketNumberAllocator, is_ticket_number
from tests.orders_fixtures import closed_port, make_snapshot, store  # noqa: F401

# 17:30 UTC on the 27th is 01:30 on the 28th in Shanghai: the day is the hotline's, not UTC's.
NOW = datetime(2026, 11, 27, 17, 30, tzinfo=timezone.utc)


@pytest.fixture
def allocator(redis_conn, redis_prefix, session_factory):
    return TicketNumberAllocator(redis_conn, session_factory, key_prefix=redis_prefix)


@pytest.fixture
def redis_down():
    """A client of a Redis that is not there, failing at once (no retries) to keep the tests quick."""
    client = redis_lib.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, socket_timeout=1,
                             retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


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
