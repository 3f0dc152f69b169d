"""The masking broker: pool, bindings under the reuse rule, resolution by pair, expiry, receipts, Redis as a
cache only, privacy; a property test against a pure model; threads and processes racing on PostgreSQL."""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import phonenumbers
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, rule,
                                 run_state_machine_as_test)
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import delete, func, select, update

from base import metrics
from base.db import make_engine, make_session_factory
from orders.departments import DepartmentStore
from orders.models import Ticket
from orders.errors import StorageUnavailable
from tests.orders_fixtures import TcpProxy, postgres_only, unreachable_database_url
from virtual_numbers import bindings as bindings_module
from virtual_numbers.lookups import cache_data
from virtual_numbers.broker import Broker
from virtual_numbers.errors import (BindingNotFound, BrokerError, InvalidParty, InvalidRequest, NumberInUse,
                                    PoolExhausted, ReceiptNotFound, UnknownNumber, UnknownTicket)
from virtual_numbers.models import Binding, BindingExtension, BindingParty, ResolutionRecord, VirtualNumber

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
X1, X2, X3, X4 = "+8675526660001", "+8675526660002", "+8675526660003", "+8675526660004"
W1, W2 = "+8675583330001", "+8675583330002"  # the water company's phones (its group G)
S1 = "+8675583340001"  # sewer
R1 = "+8675583350001"  # roads
A, C, E, F = "+8613800138000", "+8613912345678", "+8613700000001", "+8615011112222"
STRANGER = "+8613600000009"
DEPARTMENTS = {"water": [W1, W2], "sewer": [S1], "roads": [R1]}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def add_ticket(session_factory, number: str, status: str = "registered", updated_at: datetime = T0) -> None:
    with session_factory.begin() as session:
        session.add(Ticket(number=number, caller_raw="", caller_e164=None, caller_kind="withheld", channel="phone",
                           language="zh-CN", ivr_path="", urgency="normal", confidential=True, status=status,
                           created_at=T0 - timedelta(days=1), updated_at=updated_at, revision=1))


def add_departments(session_factory, departments=DEPARTMENTS) -> None:
    store = DepartmentStore(session_factory)
    for code, phones in departments.items():
        store.create(code, code, code)
        for phone in phones:
            store.add_phone(code, phone)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(session_factory):
    add_departments(session_factory)
    for i in range(1, 10):
        add_ticket(session_factory, f"202612010000{i}")
    return session_factory


def make_broker(session_factory, redis_conn, prefix, clock, **options) -> Broker:
    return Broker(session_factory, redis_conn, key_prefix=prefix, clock=clock, **options)


@pytest.fixture
def broker(world, redis_conn, redis_prefix, clock):
    return make_broker(world, redis_conn, redis_prefix, clock)


def live_parties(session_factory):
    """(party, X) of every live binding, read from the bindings themselves (not the index tables)."""
    with session_factory() as session:
        rows = session.execute(select(Binding, VirtualNumber.number)
                               .join(VirtualNumber, VirtualNumber.id == Binding.virtual_number_id)
                               .where(Binding.ended_at.is_(None))).all()
    pairs, extensions = [], []
    for binding, x in rows:
        pairs.append((binding.citizen_e164, x))
        if binding.mode == "pair":
            pairs.append(("dept:" + binding.department, x))
            if binding.department_number:
                pairs.append((binding.department_number, x))
        else:
            extensions.append((x, binding.extension))
    return pairs, extensions


def assert_reuse_rule(session_factory):
    pairs, extensions = live_parties(session_factory)
    assert len(pairs) == len(set(pairs)), "two live bindings share a (party, X)"
    assert len(extensions) == len(set(extensions)), "two live bindings share an (X, extension)"


def answer(resolution):
    """A resolution without its call id, to compare answers."""
    return (resolution.refused, resolution.reason, resolution.target, resolution.caller_id, resolution.direction,
            resolution.binding_id)


# -- the pool ---------------------------------------------------------------------------------------------


def test_pool_add_reserve_remove(broker):
    view = broker.add_number("075526660001")
    assert (view.number, view.state, view.live_bindings) == (X1, "active", 0)
    assert broker.add_number(X1) == view  # twice: one number
    broker.add_number(X2)
    assert [n.number for n in broker.numbers()] == [X1, X2]
    assert broker.reserve(X1).state == "reserved"
    assert broker.remove(X1).state == "removed"
    assert [n.number for n in broker.numbers()] == [X2]
    assert [n.state for n in broker.numbers(include_removed=True)] == ["removed", "active"]
    assert broker.add_number(X1).state == "active"  # back in service
    with pytest.raises(UnknownNumber, match=r"\+86755\*+0009 is not in the pool"):
        broker.reserve("+8675526660009")
    with pytest.raises(UnknownNumber):
        broker.add_number("not a number")


def test_figures_and_metrics(broker):
    for x in (X1, X2, X3):
        broker.add_number(x)
    broker.reserve(X3)
    broker.bind("2026120100001", A, "water")
    figures = broker.figures()
    assert (figures.active, figures.reserved, figures.in_use, figures.free, figures.live_bindings) == (2, 1, 1, 1, 1)
    reg = metrics.registry()
    assert reg.get_sample_value("hotline_virtual_numbers", {"use": "in_use"}) == 1
    assert reg.get_sample_value("hotline_virtual_numbers", {"use": "free"}) == 1
    assert reg.get_sample_value("hotline_virtual_bindings_live") == 1


# -- binding ----------------------------------------------------------------------------------------------


def test_bind_gives_a_view_without_the_citizens_number(broker, clock):
    broker.add_number(X1)
    view = broker.bind("2026120100001", "13800138000", "water", record=True)
    assert (view.virtual_number, view.mode, view.extension, view.direction, view.record) == (X1, "pair", None,
                                                                                           "both", True)
    assert view.citizen_masked == "+86138****8000" and view.live
    assert view.expires_at == clock.now + timedelta(days=30)  # an open ticket: the long default
    assert A not in repr(view) and "13800138000" not in repr(view)
    assert broker.binding(view.id) == view
    assert broker.list_bindings(ticket_number="2026120100001") == [view]
    with pytest.raises(BindingNotFound):
        broker.binding(999)


def test_bind_refuses_what_cannot_be_bound(broker, world, clock):
    broker.add_number(X1)
    with pytest.raises(UnknownTicket):
        broker.bind("2026120199999", A, "water")
    for citizen in ("withheld", "12345", "110", "", None, "not a number"):
        with pytest.raises(InvalidParty, match="citizen"):
            broker.bind("2026120100001", citizen, "water")
    with pytest.raises(InvalidParty, match="no active department"):
        broker.bind("2026120100001", A, "police")
    DepartmentStore(world).create("parks", "parks", "parks")
    with pytest.raises(InvalidParty, match="no phone"):
        broker.bind("2026120100001", A, "parks")
    with pytest.raises(InvalidParty, match="not a phone of department water"):
        broker.bind("2026120100001", A, "water", department_number=S1)
    with pytest.raises(InvalidParty, match="is a phone of department water"):
        broker.bind("2026120100001", W2, "water")
    with pytest.raises(InvalidRequest, match="direction"):
        broker.bind("2026120100001", A, "water", direction="to_department")
    with pytest.raises(InvalidRequest, match="time zone"):
        broker.bind("2026120100001", A, "water", expires_at=datetime(2027, 1, 1))
    with pytest.raises(InvalidRequest, match="future"):
        broker.bind("2026120100001", A, "water", expires_at=clock.now)


def test_expiry_of_a_closed_ticket_counts_from_its_closing(broker, world, clock):
    broker.add_number(X1)
    add_ticket(world, "2026113000001", status="closed", updated_at=clock.now - timedelta(days=2))
    assert broker.bind("2026113000001", A, "water").expires_at == clock.now + timedelta(days=5)
    add_ticket(world, "2026112000001", status="closed", updated_at=clock.now - timedelta(days=8))
    with pytest.raises(InvalidRequest, match="closed more than 7 day"):
        broker.bind("2026112000001", C, "sewer")
    # An open ticket that closes: its bindings end 7 days after the closing at the latest.
    view = broker.bind("2026120100002", C, "water", department_number=W1, expires_at=clock.now + timedelta(days=90))
    assert broker.ticket_closed("2026120100002", clock.now) == 1
    assert broker.binding(view.id).expires_at == clock.now + timedelta(days=7)


def test_reuse_rule_on_one_number(broker):
    broker.add_number(X1)
    axb = broker.bind("2026120100001", A, "water", department_number=W1)
    cxd = broker.bind("2026120100002", C, "sewer", department_number=S1)
    assert axb.virtual_number == cxd.virtual_number == X1  # AXB and CXD share X
    broker.add_number(X2)
    bxc = broker.bind("2026120100003", W1, "roads", department_number=R1)  # B is a party again
    assert bxc.virtual_number == X2 and bxc.mode == "pair"
    again = broker.bind("2026120100004", A, "sewer")  # A on X1, sewer on X1, roads... only X2 is free of both
    assert again.virtual_number == X2 and again.mode == "pair"
    assert_reuse_rule(broker.bindings._session_factory)


def test_least_used_number_first(broker):
    for x in (X1, X2, X3):
        broker.add_number(x)
    numbers = {broker.bind(f"202612010000{i}", citizen, dept).virtual_number
               for i, (citizen, dept) in enumerate([(A, "water"), (C, "sewer"), (E, "roads")], 1)}
    assert numbers == {X1, X2, X3}


def test_extension_mode_when_no_number_fits(broker, world):
    broker.add_number(X1)
    first = broker.bind("2026120100001", A, "water")
    second = broker.bind("2026120100002", C, "water")
    third = broker.bind("2026120100003", E, "water")
    assert first.mode == "pair" and second.mode == third.mode == "extension"
    assert second.virtual_number == third.virtual_number == X1
    assert len(second.extension) == 4 and second.extension != third.extension
    assert_reuse_rule(world)
    # The department: X alone reaches its pair binding; X plus an extension reaches that one.
    assert broker.resolve(W2, X1).target == A
    assert broker.resolve(W2, X1, extension=second.extension).target == C
    assert broker.resolve(W1, X1, extension=third.extension).target == E
    # The citizens call X back without an extension.
    assert (broker.resolve(C, X1).target, broker.resolve(E, X1).target) == (W2, W1)  # who last called each
    assert broker.resolve(STRANGER, X1, extension=second.extension).reason == "unknown_pair"
    assert broker.resolve(W1, X1, extension="0000").reason == "unknown_extension"
    # Without a pair binding of its own, the department must say which extension.
    broker.revoke(first.id)
    assert broker.resolve(W1, X1).reason == "extension_required"
    assert broker.resolve(W1, X1).announcement == "enter-extension"
    broker.revoke(third.id)
    assert broker.resolve(W1, X1).target == C  # only one left: no need to ask


def test_pool_exhausted_says_why(world, redis_conn, redis_prefix, clock):
    broker = make_broker(world, redis_conn, redis_prefix, clock, extension_mode=False)
    for x in (X1, X2):
        broker.add_number(x)
    broker.bind("2026120100001", A, "water")
    broker.bind("2026120100002", C, "water")
    before = metrics.registry().get_sample_value("hotline_virtual_pool_exhausted_total") or 0
    with pytest.raises(PoolExhausted) as caught:
        broker.bind("2026120100003", E, "water")
    message = str(caught.value)
    assert "2 active number(s)" in message and "department water on 2" in message
    assert "the citizen already holds a live binding on 0" in message and "extension mode is off" in message
    assert metrics.registry().get_sample_value("hotline_virtual_pool_exhausted_total") == before + 1
    # With extension mode on, a citizen holding every number cannot be helped either.
    broker = make_broker(world, redis_conn, redis_prefix, clock)
    broker.bind("2026120100003", E, "sewer")
    broker.bind("2026120100004", E, "roads")
    with pytest.raises(PoolExhausted, match="holds a binding on every number"):
        broker.bind("2026120100005", E, "water")


# -- resolution -------------------------------------------------------------------------------------------


def test_resolution_both_ways_presents_the_virtual_number(broker):
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water", record=True)
    citizen_first = broker.resolve("13800138000", "075526660001", call_id="c1")
    assert (citizen_first.refused, citizen_first.target, citizen_first.caller_id,
            citizen_first.direction) == (False, W1, X1, "to_department")  # nobody called yet: the line
    assert citizen_first.announcement == "call-recorded" and citizen_first.record
    to_citizen = broker.resolve(W2, X1, call_id="c2")
    assert (to_citizen.target, to_citizen.caller_id, to_citizen.direction) == (A, X1, "to_citizen")
    assert (to_citizen.binding_id, to_citizen.ticket_number, to_citizen.department) == (view.id, "2026120100001",
                                                                                          "water")
    assert A not in repr(to_citizen) and "+86138****8000" in repr(to_citizen)
    assert broker.resolve(A, X1).target == W2  # the person who last called
    b_view = broker.bind("2026120100002", C, "sewer", department_number=S1)
    assert broker.resolve(C, b_view.virtual_number).target == S1
    assert broker.resolve(S1, b_view.virtual_number).target == C


def test_one_number_b_only(broker):
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water", department_number=W1)
    assert broker.resolve(W1, X1).target == A
    assert broker.resolve(W2, X1).reason == "unknown_pair"  # in the group, but the binding is W1's
    assert broker.resolve(A, X1).target == W1


def test_every_refusal_is_announced_and_hung_up(broker, clock, world):
    for x in (X1, X2, X3, X4):
        broker.add_number(x)
    broker.reserve(X4)
    live = broker.bind("2026120100001", A, "water", direction="to_citizen")
    short = broker.bind("2026120100002", C, "sewer", expires_at=clock.now + timedelta(hours=1))
    revoked = broker.bind("2026120100003", E, "roads")
    closing = broker.bind("2026120100004", F, "roads")
    broker.revoke(revoked.id)
    broker.end_for_ticket("2026120100004")
    clock.advance(hours=2)
    cases = [
        ((A, "+8675526669999"), "unknown_number"),
        ((A, "not a number"), "unknown_number"),
        (("withheld", live.virtual_number), "unknown_caller"),
        (("110", live.virtual_number), "unknown_caller"),
        ((STRANGER, live.virtual_number), "unknown_pair"),
        ((A, live.virtual_number), "direction_not_allowed"),
        ((C, short.virtual_number), "expired"),
        ((E, revoked.virtual_number), "revoked"),
        ((F, closing.virtual_number), "ticket_closed"),
        ((STRANGER, X4), "number_reserved"),
        ((W1, live.virtual_number, "12ab"), "unknown_extension"),
    ]
    for args, reason in cases:
        resolution = broker.resolve(*args)
        assert (resolution.refused, resolution.reason, resolution.announcement, resolution.target,
                resolution.caller_id) == (True, reason, "not-in-service", None, None), args
    assert broker.resolve(W1, live.virtual_number).target == A  # the allowed way still works
    assert broker.resolve(C, short.virtual_number).reason == "expired"  # it stays expired
    broker.remove(X4)
    assert broker.resolve(STRANGER, X4).reason == "unknown_number"


def test_expired_binding_found_at_resolution_frees_its_number(broker, clock, world):
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water", expires_at=clock.now + timedelta(hours=1))
    clock.advance(hours=1)
    assert broker.resolve(W1, X1).reason == "expired"
    ended = broker.binding(view.id)
    assert (ended.live, ended.end_reason, ended.ended_at) == (False, "expired", clock.now)
    with world() as session:
        assert session.scalar(select(func.count()).select_from(BindingParty)) == 0
    assert broker.bind("2026120100002", A, "water").virtual_number == X1  # the same parties, on X1 again


def test_expire_due_frees_numbers(broker, clock, world):
    broker.add_number(X1)
    soon = broker.bind("2026120100001", A, "water", expires_at=clock.now + timedelta(hours=1))
    later = broker.bind("2026120100002", C, "sewer", expires_at=clock.now + timedelta(hours=3))
    assert broker.expire_due() == 0
    clock.advance(hours=2)
    assert broker.expire_due() == 1
    assert not broker.binding(soon.id).live and broker.binding(later.id).live
    assert broker.figures().live_bindings == 1
    assert broker.bind("2026120100003", E, "water").mode == "pair"  # water is free on X1 again
    assert broker.expire_due(clock.now + timedelta(hours=2)) == 1
    assert broker.resolve(C, X1).reason == "expired"


def test_an_expired_binding_is_ended_when_its_parties_bind_again(world, redis_conn, redis_prefix, clock):
    broker = make_broker(world, redis_conn, redis_prefix, clock, extension_mode=False)
    broker.add_number(X1)
    old = broker.bind("2026120100001", A, "water", expires_at=clock.now + timedelta(minutes=5))
    clock.advance(minutes=10)
    assert broker.bind("2026120100002", C, "water").virtual_number == X1  # no job ran: bind ended it itself
    assert broker.binding(old.id).end_reason == "expired"


def test_revoke_and_end_for_ticket(broker, clock):
    broker.add_number(X1)
    first = broker.bind("2026120100001", A, "water")
    second = broker.bind("2026120100001", C, "sewer")
    assert broker.resolve(W1, X1).target == A
    revoked = broker.revoke(first.id)
    assert (revoked.live, revoked.end_reason) == (False, "revoked")
    assert broker.revoke(first.id) == revoked  # again: nothing changes
    assert broker.resolve(W1, X1).reason == "revoked"
    assert broker.end_for_ticket("2026120100001") == 1
    assert broker.binding(second.id).end_reason == "ticket_closed"
    assert broker.end_for_ticket("2026120100001") == 0
    with pytest.raises(BindingNotFound):
        broker.revoke(12345)
    with pytest.raises(InvalidRequest):
        broker.revoke(second.id, "because")


def test_renewed_on_use(broker, clock):
    broker.add_number(X1)
    renewed = broker.bind("2026120100001", A, "water", expires_at=clock.now + timedelta(hours=1), renew_on_use=True)
    fixed = broker.bind("2026120100002", C, "sewer", expires_at=clock.now + timedelta(hours=1))
    clock.advance(minutes=30)
    assert broker.resolve(W1, X1).target == A
    assert broker.resolve(S1, X1).target == C
    assert broker.binding(renewed.id).expires_at == clock.now + timedelta(days=7)
    assert broker.binding(fixed.id).expires_at == T0 + timedelta(hours=1)
    clock.advance(hours=2)
    assert broker.resolve(A, X1).target == W1  # the cache (which saw the renewal) and the database agree
    assert broker.resolve(C, X1).reason == "expired"


def test_reserve_drains_and_remove_waits_for_the_end(broker):
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water")
    broker.reserve(X1)
    broker.add_number(X2)
    assert broker.bind("2026120100002", C, "sewer").virtual_number == X2  # no new binding on X1
    assert broker.resolve(W1, X1).target == A  # the live one goes on
    with pytest.raises(NumberInUse, match="1 live binding"):
        broker.remove(X1)
    broker.revoke(view.id)
    assert broker.remove(X1).state == "removed"
    assert broker.resolve(W1, X1).reason == "unknown_number"


# -- Redis: a cache, nothing more ---------------------------------------------------------------------------


def _scenario(broker, clock):
    """Bindings of every kind, and the calls to ask about them."""
    for x in (X1, X2):
        broker.add_number(x)
    broker.bind("2026120100001", A, "water")
    broker.bind("2026120100002", C, "water", department_number=W2)
    broker.bind("2026120100003", E, "water")  # extension on X1 or X2
    gone = broker.bind("2026120100004", F, "sewer", direction="to_citizen")
    broker.revoke(gone.id)
    broker.bind("2026120100005", F, "roads", direction="to_citizen")
    ext = broker.list_bindings(ticket_number="2026120100003")[0]
    calls = [(c, x, None) for c in (A, C, E, F, W1, W2, S1, R1, STRANGER, "withheld") for x in (X1, X2, X3)]
    calls += [(c, ext.virtual_number, ext.extension) for c in (W1, W2, E, STRANGER)]
    return calls


def test_a_flushed_redis_changes_nothing_but_speed(broker, clock, redis_conn, redis_prefix):
    calls = _scenario(broker, clock)
    [broker.resolve(*call) for call in calls]  # who last called settles after one round
    first = [answer(broker.resolve(*call)) for call in calls]
    cached = [answer(broker.resolve(*call)) for call in calls]
    assert cached == first
    assert any(not a[0] for a in first) and any(a[0] for a in first)
    keys = list(redis_conn.scan_iter(redis_prefix + "*"))
    assert keys and not any(n[1:] in k.decode() for k in keys for n in (A, C, E, F))  # no number in a key name
    redis_conn.delete(*keys)
    assert [answer(broker.resolve(*call)) for call in calls] == first
    redis_conn.delete(*redis_conn.scan_iter(redis_prefix + "*"))
    assert broker.rebuild_cache() == 4
    assert [answer(broker.resolve(*call)) for call in calls] == first


def test_a_redis_that_is_down_changes_nothing_but_speed(world, redis_down, clock, caplog):
    caplog.set_level(logging.WARNING)
    plain = Broker(world, None, clock=clock)
    calls = _scenario(plain, clock)
    [plain.resolve(*call) for call in calls]  # who last called settles after one round
    expected = [answer(plain.resolve(*call)) for call in calls]
    down = Broker(world, redis_down, clock=clock, key_prefix="down:", redis_pause=0.0)
    assert [answer(down.resolve(*call)) for call in calls] == expected
    view = down.bind("2026120100006", STRANGER, "sewer")
    assert down.resolve(S1, view.virtual_number).target == STRANGER
    down.revoke(view.id)
    assert down.resolve(S1, view.virtual_number).reason == "revoked"
    assert down.rebuild_cache() == 0
    assert "Redis failed" in caplog.text


def test_an_ended_binding_cannot_come_back_through_a_late_refill(broker, world):
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water")
    assert broker.resolve(W1, X1).target == A  # in the cache now
    with world() as session:  # what a resolution read from the database just before the binding ended
        data = cache_data(session.get(Binding, view.id), X1, [W1, W2])
    broker.revoke(view.id)
    assert broker.cache.put(data, [W1]) is False  # its refill, arriving after the end, is refused
    assert broker.resolve(W1, X1).reason == "revoked"


def resolutions_from(source: str) -> float:
    reg = metrics.registry()
    return sum(reg.get_sample_value("hotline_virtual_resolutions_total", {"outcome": outcome, "source": source}) or 0
               for outcome in ("connected",))


def test_the_cache_keeps_the_binding_current(broker, clock, redis_conn):
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water", expires_at=clock.now + timedelta(hours=1), renew_on_use=True)
    for phone in (W1, W2):
        assert broker.resolve(phone, X1).target == A  # each fills its pair key
    cached = resolutions_from("cache")
    clock.advance(hours=3)  # past the first expiry: only the renewals keep it alive
    assert broker.resolve(W1, X1).target == A
    assert resolutions_from("cache") == cached + 1
    assert broker.binding(view.id).expires_at == clock.now + timedelta(days=7)  # renewed in the database...
    data = json.loads(redis_conn.get(broker.cache.binding_key(view.id)))
    assert (data["expires"], data["last"]) == ((clock.now + timedelta(days=7)).timestamp(), W1)  # ...and here
    assert broker.resolve(A, X1).target == W1  # who last called, through the cache
    with broker.bindings._session_factory() as session:
        assert session.get(Binding, view.id).last_department_caller == W1


def test_the_cache_answers_while_the_database_is_down_and_says_what_it_could_not_record(
        broker, world, redis_conn, redis_prefix, clock, database_url, tmp_path, caplog):
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    assert broker.resolve(W1, X1).target == A
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        cut_off = make_broker(make_session_factory(engine), redis_conn, redis_prefix, clock)
        assert cut_off.resolve(W1, X1, call_id="during-outage").target == A
        assert "call during-outage (connected) was not recorded" in caplog.text
        with pytest.raises(StorageUnavailable):  # no cached answer: no guess either
            cut_off.resolve(W2, X1)
    finally:
        engine.dispose()


@pytest.fixture
def flaky_redis(broker, redis_conn, redis_prefix, clock):
    """(a second broker whose Redis goes through a proxy the test can cut, the proxy)."""
    proxy = TcpProxy("127.0.0.1", redis_conn.connection_pool.connection_kwargs.get("port", 6379))
    proxy.start()
    client = redis_lib.Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=0.5, socket_timeout=0.5,
                             retry=Retry(NoBackoff(), 0))
    try:
        yield make_broker(broker.bindings._session_factory, client, redis_prefix, clock, redis_pause=0.0), proxy
    finally:
        client.close()
        proxy.stop()


def test_a_tombstone_redis_missed_is_delivered_when_it_answers_again(broker, flaky_redis):
    flaky, proxy = flaky_redis
    flaky.add_number(X1)
    view = flaky.bind("2026120100001", A, "water")
    assert flaky.resolve(W1, X1).target == A  # cached
    proxy.stop()
    flaky.revoke(view.id)  # the tombstone cannot reach Redis: owed
    proxy.start()
    assert broker.resolve(W1, X1).target == A  # another process still reads the stale entry...
    assert flaky.resolve(W2, X1).reason == "revoked"  # ...until this one uses Redis again and pays its debt
    assert broker.resolve(W1, X1).reason == "revoked"


# -- receipts -----------------------------------------------------------------------------------------------


def test_receipts_once_per_call_and_masked(broker, clock, world):
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    broker.bind("2026120100002", C, "sewer")
    first = broker.resolve(W1, X1, call_id="1764550000.1")
    assert broker.resolve(W1, X1, call_id="1764550000.1").target == first.target  # a retried request
    broker.resolve(S1, X1, call_id="1764550000.2")
    broker.resolve(STRANGER, X1, call_id="1764550000.3")
    with world() as session:
        assert session.scalar(select(func.count()).select_from(ResolutionRecord)) == 3
    clock.advance(seconds=5)
    receipt = broker.record_call("1764550000.1", answered_at=clock.now, ended_at=clock.now + timedelta(seconds=42),
                                 hangup_by="callee")
    assert (receipt.seconds, receipt.hangup_by, receipt.outcome, receipt.direction) == (42, "callee", "connected",
                                                                                        "to_citizen")
    assert (receipt.caller_masked, receipt.callee_masked) == ("+86755****0001", "+86138****8000")
    water = broker.receipts(department="water")
    assert [r.call_id for r in water] == ["1764550000.1"] and water[0].ticket_number == "2026120100001"
    everyone = broker.receipts()
    assert {r.outcome for r in everyone} == {"connected", "unknown_pair"}
    assert all(A not in repr(r) and C not in repr(r) and STRANGER not in repr(r) for r in everyone)
    with pytest.raises(ReceiptNotFound):
        broker.record_call("nope", hangup_by="caller")
    with pytest.raises(InvalidRequest):
        broker.record_call("1764550000.1", hangup_by="the cat")


def test_an_extension_prompt_is_replaced_by_the_final_answer(broker, world):
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    second = broker.bind("2026120100002", C, "water")
    third = broker.bind("2026120100003", E, "water")
    broker.end_for_ticket("2026120100001")
    assert broker.resolve(W1, X1, call_id="k1").reason == "extension_required"
    assert broker.resolve(W1, X1, extension=third.extension, call_id="k1").target == E
    assert broker.resolve(W1, X1, extension=second.extension, call_id="k1").target == C  # a retry: first one stays
    (receipt,) = broker.receipts(ticket_number="2026120100003")
    assert (receipt.call_id, receipt.outcome) == ("k1", "connected")


# -- privacy ----------------------------------------------------------------------------------------------

#: Text that is not a citizen's and holds digits: a generated citizen must not happen to be found in it.
BACKGROUND = " ".join([X1, X2, W1, W2, S1, R1, STRANGER, "2026120100001", "20261201"])


def number_forms(e164: str) -> list[str]:
    parsed = phonenumbers.parse(e164)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    digits = str(parsed.national_number)
    return [e164, e164[1:], national, digits, digits[-8:]]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.from_regex(r"1(3[0-9]|5[0-35-9]|8[0-9])[0-9]{8}", fullmatch=True))
def test_privacy_sweep(world, redis_conn, redis_prefix, clock, caplog, national):
    parsed = phonenumbers.parse(national, "CN")
    assume(phonenumbers.is_valid_number(parsed))
    citizen = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    forms = number_forms(citizen)
    assume(not any(form in BACKGROUND for form in forms))
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    broker = make_broker(world, redis_conn, redis_prefix, clock, extension_mode=False)
    with world.begin() as session:
        session.execute(delete(BindingParty))
        session.execute(delete(BindingExtension))
        session.execute(update(Binding).values(ended_at=clock.now, end_reason="revoked"))
    broker.add_number(X1)
    shown = []
    view = broker.bind("2026120100001", national, "water", record=True)
    shown += [view, broker.list_bindings(), broker.binding(view.id), broker.figures(), broker.numbers()]
    call_id = uuid.uuid4().hex
    resolution = broker.resolve(W1, X1, call_id=call_id)
    assert resolution.target == citizen  # the one deliberate use: the dial towards the citizen
    shown.append(resolution)
    shown.append(broker.resolve(citizen, X1))
    shown.append(broker.resolve(STRANGER, X1))
    for attempt in (lambda: broker.bind("2026120100002", citizen, "water"),  # water holds X1: exhausted
                    lambda: broker.bind("2026120100002", C, "water", department_number=citizen),
                    lambda: broker.bind("2026120100002", national[:5], "water"),
                    lambda: broker.reserve(citizen),
                    lambda: broker.remove(national)):
        with pytest.raises(BrokerError) as caught:
            attempt()
        shown += [caught.value, str(caught.value)]
    shown.append(broker.revoke(view.id))
    shown.append(broker.resolve(W1, X1))
    shown.append(broker.receipts())
    shown.append(broker.record_call(call_id, hangup_by="caller"))
    texts = [repr(item) for item in shown] + [str(item) for item in shown]
    texts += [record.getMessage() for record in caplog.records] + [caplog.text]
    for text in texts:
        for form in forms:
            assert form not in text, f"{form!r} leaked into {text[:200]!r}"


# -- the rule under random sequences, against a pure model ---------------------------------------------------

MODEL_NUMBERS = (X1, X2, X3)
MODEL_CITIZENS = (A, C, E, F)
MODEL_CALLERS = MODEL_CITIZENS + (W1, W2, S1, R1, STRANGER)
MODEL_DEPARTMENTS = {"water": [W1, W2], "sewer": [S1], "roads": [R1]}
MODEL_TICKETS = [f"20261201{n:05d}" for n in range(1, 5)]


class Model:
    """What the broker must answer, in plain Python (it does not choose numbers: it checks the choice)."""

    def __init__(self):
        self.states = {}  # X -> active | reserved | removed
        self.bindings = {}  # id -> dict

    def parties(self, b):
        if b["mode"] == "extension":
            return {b["citizen"]}
        return {b["citizen"], "dept:" + b["department"]} | ({b["number"]} if b["number"] else set())

    def live(self, x=None):
        return [b for b in self.bindings.values() if b["ended"] is None and (x is None or b["x"] == x)]

    def end(self, b, reason, now):
        b["ended"], b["reason"] = now, reason

    def side(self, b, caller):
        if caller == b["citizen"]:
            return "citizen"
        if b["number"]:
            return "department" if caller == b["number"] else None
        return "department" if caller in MODEL_DEPARTMENTS[b["department"]] else None

    def fits(self, x, parties, mode, citizen):
        if self.states.get(x) != "active":
            return False
        held = set().union(*[self.parties(b) for b in self.live(x)]) if self.live(x) else set()
        return not (parties & held) if mode == "pair" else citizen not in held

    def resolve(self, caller, x, extension, now):
        if caller == "withheld":  # known without reading anything
            return ("refused", "unknown_caller")
        if self.states.get(x, "removed") == "removed":
            return ("refused", "unknown_number")
        codes = [code for code, phones in MODEL_DEPARTMENTS.items() if caller in phones]
        if extension is not None:
            found = [b for b in self.live(x) if b["extension"] == extension]
            if not found:
                return ("refused", "unknown_extension")
            if self.side(found[0], caller) is None:
                return ("refused", "unknown_pair")
        else:
            found = [b for b in self.live(x) if self.side(b, caller) and (b["mode"] == "pair"
                                                                        or caller == b["citizen"])]
            if not found and codes:
                found = [b for b in self.live(x) if b["mode"] == "extension" and b["department"] in codes
                         and self.side(b, caller) == "department"]
                if len(found) > 1:
                    return ("refused", "extension_required")
            if len(found) > 1:
                return ("refused", "ambiguous")
            if not found:
                ended = [b for b in self.bindings.values() if b["x"] == x and b["ended"] is not None and (
                    caller in (b["citizen"], b["number"]) or (b["department"] in codes and not b["number"]))]
                if ended:
                    return ("refused", max(ended, key=lambda b: b["ended"])["reason"])
                return ("refused", "number_reserved" if self.states[x] == "reserved" else "unknown_pair")
        b = found[0]
        if b["expires"] <= now:
            self.end(b, "expired", now)
            return ("refused", "expired")
        if self.side(b, caller) == "department":
            if not b["number"]:
                b["last"] = caller
            return ("connected", b["citizen"])
        if b["direction"] == "to_citizen":
            return ("refused", "direction_not_allowed")
        phones = MODEL_DEPARTMENTS[b["department"]]
        return ("connected", b["number"] or (b["last"] if b["last"] in phones else phones[0]))


class BrokerMachine(RuleBasedStateMachine):
    session_factory = redis_conn = prefix = None
    extension_mode = True

    @initialize()
    def start(self):
        with self.session_factory.begin() as session:
            for table in (ResolutionRecord, BindingExtension, BindingParty, Binding, VirtualNumber):
                session.execute(delete(table))
        self.redis_conn.delete(*(list(self.redis_conn.scan_iter(self.prefix + "*")) or ["-"]))
        self.clock = Clock()
        bindings_module._rng = random.Random(0)  # the tie-break among numbers: the same run for the same steps
        self.broker = Broker(self.session_factory, self.redis_conn, key_prefix=self.prefix, clock=self.clock,
                             extension_mode=self.extension_mode, extension_digits=2)
        self.model = Model()
        for x in MODEL_NUMBERS:
            self.broker.add_number(x)
            self.model.states[x] = "active"

    def tick(self):
        self.clock.advance(seconds=1)  # every step at its own time: "the last ended" is never a tie

    @rule(ticket=st.sampled_from(MODEL_TICKETS), citizen=st.sampled_from(MODEL_CITIZENS),
          department=st.sampled_from(sorted(MODEL_DEPARTMENTS)), one_number=st.booleans(),
          minutes=st.integers(1, 600), direction=st.sampled_from(["both", "to_citizen"]))
    def bind(self, ticket, citizen, department, one_number, minutes, direction):
        self.tick()
        now = self.clock.now
        number = MODEL_DEPARTMENTS[department][-1] if one_number else None
        parties = {citizen, "dept:" + department} | ({number} if number else set())
        for b in self.model.live():  # bind ends the expired bindings that hold one of its parties
            if b["expires"] <= now and parties & self.model.parties(b):
                self.model.end(b, "expired", now)
        try:
            view = self.broker.bind(ticket, citizen, department, department_number=number, direction=direction,
                                    expires_at=now + timedelta(minutes=minutes))
        except PoolExhausted:
            assert not any(self.model.fits(x, parties, "pair", citizen) for x in MODEL_NUMBERS)
            assert not self.extension_mode or not any(self.model.fits(x, parties, "extension", citizen)
                                                      for x in MODEL_NUMBERS)
            return
        assert self.model.fits(view.virtual_number, parties, view.mode, citizen)
        if view.mode == "extension":
            assert not any(self.model.fits(x, parties, "pair", citizen) for x in MODEL_NUMBERS)
        self.model.bindings[view.id] = dict(id=view.id, citizen=citizen, department=department, number=number,
                                            x=view.virtual_number, mode=view.mode, extension=view.extension,
                                            direction=direction, expires=view.expires_at, ended=None, reason=None,
                                            last=None)

    @rule(minutes=st.integers(1, 90))
    def time_passes(self, minutes):
        self.clock.advance(minutes=minutes)

    @rule()
    def expire_due(self):
        self.tick()
        due = [b for b in self.model.live() if b["expires"] <= self.clock.now]
        for b in due:
            self.model.end(b, "expired", self.clock.now)
        assert self.broker.expire_due() == len(due)

    @rule(pick=st.integers(0, 63))
    def revoke(self, pick):
        self.tick()
        live = sorted(b_id for b_id, b in self.model.bindings.items() if b["ended"] is None)
        if not live:
            return
        binding_id = live[pick % len(live)]
        self.broker.revoke(binding_id)
        self.model.end(self.model.bindings[binding_id], "revoked", self.clock.now)

    @rule(x=st.sampled_from(MODEL_NUMBERS), state=st.sampled_from(["reserved", "active", "removed"]))
    def pool_change(self, x, state):
        self.tick()
        if state == "reserved":
            if self.model.states[x] == "removed":
                with pytest.raises(UnknownNumber):
                    self.broker.reserve(x)
                return
            self.broker.reserve(x)
        elif state == "active":
            self.broker.add_number(x)
        elif self.model.states[x] == "removed":
            with pytest.raises(UnknownNumber):
                self.broker.remove(x)
            return
        elif self.model.live(x):
            with pytest.raises(NumberInUse):
                self.broker.remove(x)
            return
        else:
            self.broker.remove(x)
        self.model.states[x] = state

    @rule(caller=st.sampled_from(MODEL_CALLERS + ("withheld",)), x=st.sampled_from(MODEL_NUMBERS),
          pick=st.integers(0, 1023), party=st.integers(0, 3), keyed=st.integers(0, 3), twice=st.booleans())
    def resolve(self, caller, x, pick, party, keyed, twice):
        """A call to x: mostly from a party of one of its bindings (``party``), else from anyone; ``twice``: the
        same call again, which the cache may answer."""
        self.tick()
        live = sorted(self.model.live(x), key=lambda b: b["id"])
        extension = None
        if party and live:
            b = live[pick % len(live)]
            callers = [b["citizen"]] + ([b["number"]] if b["number"] else MODEL_DEPARTMENTS[b["department"]])
            caller = callers[pick // len(live) % len(callers)]
            if b["mode"] == "extension" and keyed:
                extension = b["extension"]
        elif keyed == 0:
            choices = ["99"] + sorted({b["extension"] for b in self.model.bindings.values()
                                       if b["extension"] and b["x"] == x})
            extension = choices[pick % len(choices)]
        for _ in range(2 if twice else 1):
            expected = self.model.resolve(caller, x, extension, self.clock.now)
            got = self.broker.resolve(caller, x, extension)
            assert (("refused", got.reason) if got.refused else ("connected", got.target)) == expected
            if not got.refused:
                assert got.caller_id == x

    @rule()
    def redis_loses_everything(self):
        self.redis_conn.delete(*(list(self.redis_conn.scan_iter(self.prefix + "*")) or ["-"]))

    def teardown(self):
        bindings_module._rng = random.SystemRandom()

    @invariant()
    def never_two_live_bindings_share_a_party_on_a_number(self):
        if self.session_factory is not None and hasattr(self, "model"):
            assert_reuse_rule(self.session_factory)


@pytest.mark.parametrize("extension_mode", [True, False])
def test_random_sequences_keep_the_rule_and_agree_with_the_model(world, redis_conn, redis_prefix, extension_mode):
    machine = type("Machine", (BrokerMachine,), dict(session_factory=world, redis_conn=redis_conn,
                                                     prefix=redis_prefix, extension_mode=extension_mode))
    run_state_machine_as_test(machine, settings=settings(max_examples=30, stateful_step_count=40, deadline=None,
                                                         suppress_health_check=list(HealthCheck)))


# -- concurrency: threads and processes on the real PostgreSQL ------------------------------------------------

RACE_NUMBERS = [f"+86755266601{i:02d}" for i in range(12)]
RACE_DEPARTMENTS = {f"d{i}": [f"+86755833{i:02d}001", f"+86755833{i:02d}002"] for i in range(4)}
RACE_CITIZENS = [f"+861380000{i:04d}" for i in range(30)]


def _race_setup(session_factory) -> Broker:
    add_departments(session_factory, RACE_DEPARTMENTS)
    add_ticket(session_factory, "2026120100001")
    broker = Broker(session_factory, None)
    for x in RACE_NUMBERS:
        broker.add_number(x)
    return broker


def _race_binds(broker: Broker, worker: int, count: int) -> dict[str, int]:
    rng = random.Random(worker)
    made = {"pair": 0, "extension": 0, "exhausted": 0}
    for i in range(count):
        department = rng.choice(sorted(RACE_DEPARTMENTS))
        number = RACE_DEPARTMENTS[department][0] if rng.random() < 0.3 else None
        try:
            view = broker.bind("2026120100001", rng.choice(RACE_CITIZENS), department, department_number=number)
            made[view.mode] += 1
        except PoolExhausted:
            made["exhausted"] += 1
    return made


def _bind_in_process(database_url: str, redis_url: str, prefix: str, worker: int, start, results) -> None:
    engine = make_engine(database_url)
    try:
        broker = Broker(make_session_factory(engine), redis_lib.Redis.from_url(redis_url), key_prefix=prefix,
                        extension_digits=2)
        start.wait(30)
        results.put(_race_binds(broker, 100 + worker, 25))
    finally:
        engine.dispose()


@postgres_only
def test_threads_never_share_a_party_on_a_number(session_factory, redis_conn, redis_prefix):
    _race_setup(session_factory)
    broker = Broker(session_factory, redis_conn, key_prefix=redis_prefix, extension_mode=False)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def work(worker):
        try:
            barrier.wait()
            results.append(_race_binds(broker, worker, 25))
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sum(r["pair"] + r["exhausted"] for r in results) == 200
    assert sum(r["pair"] for r in results) > 12  # numbers were shared, not one per binding
    assert sum(r["exhausted"] for r in results) > 0  # and the pool did run out
    assert_reuse_rule(session_factory)
    with session_factory() as session:
        parties = session.scalar(select(func.count()).select_from(BindingParty))
        live = session.execute(select(Binding.department_number).where(Binding.ended_at.is_(None))).scalars().all()
    assert parties == 2 * len(live) + sum(1 for n in live if n)


@postgres_only
def test_processes_never_share_a_party_on_a_number(database_url, session_factory, redis_prefix):
    from tests.conftest import REDIS_URL  # beside its only use

    _race_setup(session_factory)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_bind_in_process, args=(database_url, REDIS_URL, redis_prefix, i, start,
                                                                 results)) for i in range(3)]
    for p in processes:
        p.start()
    start.set()
    made = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    assert sum(sum(m.values()) for m in made) == 75
    assert sum(m["extension"] for m in made) > 0
    assert_reuse_rule(session_factory)
