"""The Redis fast path (virtual_numbers.cache): one round trip per resolution; refusals kept under X's
generation, so that a refusal can never hide a binding made after it was read; and still no number in a
key name, no number in a kept refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis as redis_lib

from base import metrics
from base.db import make_engine, make_session_factory
from tests.orders_fixtures import unreachable_database_url
from tests.test_virtual_numbers_broker import (  # noqa: F401
    A,
    C,
    STRANGER,
    W1,
    W2,
    X1,
    X2,
    answer,
    broker,
    clock,
    flaky_redis,
    make_broker,
    number_forms,
    world,
)
from virtual_numbers import cache as cache_module


def from_(source: str) -> float:
    reg = metrics.registry()
    total = 0.0
    for metric in reg.collect():
        if metric.name == "hotline_virtual_resolutions":
            total += sum(s.value for s in metric.samples
                         if s.name.endswith("_total") and s.labels.get("source") == source)
    return total


class Counting(redis_lib.Connection):
    """A connection that counts the commands it sends (a pipeline's count as one: one round trip)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        Counting.sent += 1
        return super().send_packed_command(command, check_health)


def counting_client(redis_conn) -> redis_lib.Redis:
    kwargs = redis_conn.connection_pool.connection_kwargs
    pool = redis_lib.ConnectionPool(connection_class=Counting, host=kwargs.get("host", "127.0.0.1"),
                                    port=kwargs.get("port", 6379), db=kwargs.get("db", 0))
    return redis_lib.Redis(connection_pool=pool)


# -- one round trip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("packer", ["hiredis", "redis-py"])
def test_a_resolution_answered_from_redis_is_one_round_trip(world, redis_conn, redis_prefix, clock,  # noqa: F811
                                                            monkeypatch, packer):
    if packer == "redis-py":
        monkeypatch.setattr(cache_module, "_pack_command", None)  # as without hiredis installed
    elif cache_module._pack_command is None:
        pytest.skip("hiredis is not installed")
    client = counting_client(redis_conn)
    try:
        broker = make_broker(world, client, redis_prefix, clock)
        broker.add_number(X1)
        broker.bind("2026120100001", A, "water")
        calls = [(W1, X1), (A, X1), (STRANGER, X1), (C, X1)]
        first = [answer(broker.resolve(*call)) for call in calls]  # the database answers, the cache fills
        cached = from_("cache")
        for call, expected in zip(calls, first):
            before = Counting.sent
            assert answer(broker.resolve(*call)) == expected
            assert Counting.sent - before == 1, call  # one command, one round trip
        assert from_("cache") == cached + 4  # the two refusals too
    finally:
        client.connection_pool.disconnect()


# -- refusals --------------------------------------------------------------------------------------------


def test_a_refusal_is_kept_and_answers_while_the_database_is_down(broker, world, redis_conn, redis_prefix,  # noqa: F811
                                                                  clock, database_url, tmp_path):
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    first = broker.resolve(STRANGER, X1)
    assert (first.reason, first.announcement) == ("unknown_pair", "not-in-service")
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        cut_off = make_broker(make_session_factory(engine), redis_conn, redis_prefix, clock)
        again = cut_off.resolve(STRANGER, X1, call_id="kept")
        assert answer(again) == answer(first) and again.call_id == "kept"
    finally:
        engine.dispose()
    kept = [redis_conn.get(k) for k in redis_conn.scan_iter(redis_prefix + "vn:no:*")]
    assert kept and not any(form.encode() in value for value in kept for n in (A, STRANGER)
                            for form in number_forms(n))  # a kept refusal holds no number


def test_a_kept_refusal_never_hides_a_fresh_binding(broker):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    assert broker.resolve(C, X1).reason == "unknown_pair"
    assert broker.resolve(C, X1).reason == "unknown_pair"  # kept
    broker.bind("2026120100002", C, "sewer")  # on X1: the only number
    assert broker.resolve(C, X1).target == "+8675583340001"
    assert broker.resolve("+8675583340001", X1).target == C


def test_a_refusal_read_before_a_binding_was_made_is_not_kept(broker):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    before = broker.cache.lookup(X1, C)  # a resolution reads X1's generation, then the database...
    assert before.data is None and before.generation
    broker.bind("2026120100002", C, "sewer")  # ...a binding is made meanwhile...
    refusal = {"reason": "unknown_pair", "announcement": "not-in-service", "direction": None, "binding_id": None,
               "ticket_number": None, "department": None}
    assert broker.cache.refuse(X1, C, None, before.generation, refusal) is False  # ...its refusal is dropped
    assert broker.cache.lookup(X1, C).refusal is None
    assert broker.resolve(C, X1).target == "+8675583340001"


def test_pool_changes_outdate_kept_refusals(broker):  # noqa: F811
    assert broker.resolve(STRANGER, X2).reason == "unknown_number"
    assert broker.resolve(STRANGER, X2).reason == "unknown_number"  # kept
    broker.add_number(X2)
    assert broker.resolve(STRANGER, X2).reason == "unknown_pair"
    broker.bind("2026120100001", STRANGER, "water")
    assert broker.resolve(STRANGER, X2).target == W1
    assert broker.resolve(C, X2).reason == "unknown_pair"
    broker.reserve(X2)
    assert broker.resolve(C, X2).reason == "number_reserved"


def test_an_ended_binding_outdates_kept_refusals(broker):  # noqa: F811
    broker.add_number(X1)
    assert broker.resolve(A, X1).reason == "unknown_pair"  # kept
    view = broker.bind("2026120100001", A, "water")
    assert broker.resolve(A, X1).target == W1
    broker.revoke(view.id)
    assert broker.resolve(A, X1).reason == "revoked"
    assert broker.resolve(A, X1).reason == "revoked"  # kept
    broker.bind("2026120100002", A, "water")
    assert broker.resolve(A, X1).target == W1


def test_a_refusal_about_a_binding_is_not_kept(broker, clock):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water", direction="to_citizen",
                expires_at=clock.now + timedelta(hours=1))
    database = from_("database")
    assert broker.resolve(A, X1).reason == "direction_not_allowed"
    assert broker.resolve(A, X1).reason == "direction_not_allowed"
    assert from_("database") == database + 2  # its binding's expiry would change it: read each time
    clock.advance(hours=2)
    assert broker.resolve(A, X1).reason == "expired"


def test_a_lost_generation_outdates_every_kept_refusal(broker, redis_conn):  # noqa: F811
    broker.add_number(X1)
    broker.resolve(STRANGER, X1)
    broker.resolve(STRANGER, X1)
    database = from_("database")
    redis_conn.delete(broker.cache.generation_key(X1))  # evicted, or Redis restarted with some keys only
    assert broker.resolve(STRANGER, X1).reason == "unknown_pair"
    assert from_("database") == database + 1  # read again, never taken from a refusal of another generation


def test_a_new_generation_redis_missed_is_sent_before_it_is_used_again(broker, flaky_redis):  # noqa: F811
    flaky, proxy = flaky_redis
    flaky.add_number(X1)
    flaky.bind("2026120100001", A, "water")
    assert flaky.resolve(C, X1).reason == "unknown_pair"  # kept
    proxy.stop()
    flaky.bind("2026120100002", C, "sewer")  # X1's new generation cannot reach Redis: owed
    proxy.start()
    assert broker.resolve(C, X1).reason == "unknown_pair"  # another process still reads the old refusal...
    assert flaky.resolve(C, X1).target == "+8675583340001"  # ...until this one uses Redis and pays its debt
    assert broker.resolve(C, X1).target == "+8675583340001"


def test_refusals_off_keeps_none(world, redis_conn, redis_prefix, clock):  # noqa: F811
    broker = make_broker(world, redis_conn, redis_prefix, clock, refusal_ttl=0)
    broker.add_number(X1)
    broker.resolve(STRANGER, X1)
    database = from_("database")
    broker.resolve(STRANGER, X1)
    assert from_("database") == database + 1
    assert not list(redis_conn.scan_iter(redis_prefix + "vn:no:*"))


def test_no_number_in_any_key_name(broker, redis_conn, redis_prefix):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    for caller in (A, W1, W2, C, STRANGER):
        broker.resolve(caller, X1, call_id=f"call-{caller[-4:]}")
    keys = [k.decode() for k in redis_conn.scan_iter(redis_prefix + "*")]
    assert any(":no:" in k for k in keys) and any(":call:" in k for k in keys) and any(":gen:" in k for k in keys)
    assert not any(form in k for k in keys for n in (A, C, STRANGER, W1, W2) for form in number_forms(n)
                   if len(form) >= 8)
