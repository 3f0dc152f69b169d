"""TicketStore on the real PostgreSQL and on SQLite: saves, revisions, concurrency, reads."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from base.db import make_engine, make_session_factory
from orders.errors import InvalidFilter, SnapshotConflict, StorageUnavailable
from orders.models import CallRecord, Ticket
from orders.store import TicketFilter, TicketStore
from tests.orders_fixtures import T0, make_snapshot, store, unreachable_database_url  # noqa: F401

MOBILE = "+8613800138000"


def count(session_factory, model):
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_save_and_get(store):
    snap = make_snapshot(category="water", confidential=True)
    assert store.save(snap) is True
    view = store.get(snap.number)
    assert (view.number, view.caller_raw, view.caller_e164) == (snap.number, "13800138000", MOBILE)
    assert view.caller_kind == "mobile"
    assert (view.status, view.category, view.confidential, view.revision) == ("in_ivr", "water", True, 1)
    assert view.created_at == T0 and view.created_at.tzinfo is not None
    assert view.call.uniqueid == snap.uniqueid and view.call.started_at == T0 and view.call.outcome is None
    assert store.status_of(snap.number) == "in_ivr"
    assert store.get("2026112899999") is None and store.status_of("2026112899999") is None


def test_newer_revision_updates_ticket_and_call(store):
    snap = make_snapshot()
    store.save(snap)
    end = T0 + timedelta(seconds=45)
    final = snap.next(now=end, status="queued", category="traffic", urgency="high", ivr_path="language:1>main:3",
                      answered_at=T0 + timedelta(seconds=1), ended_at=end, outcome="routed")
    assert store.save(final) is True
    view = store.get(snap.number)
    assert (view.revision, view.status, view.category, view.urgency) == (2, "queued", "traffic", "high")
    assert view.ivr_path == "language:1>main:3"
    assert view.updated_at == end
    assert (view.call.ended_at, view.call.outcome) == (end, "routed")
    assert len(view.calls) == 1


def test_duplicate_and_older_snapshots_are_no_ops(store, session_factory):
    first = make_snapshot()
    second = first.next(status="queued", outcome="routed")
    assert store.save(second) is True
    assert store.save(second) is False  # the same retry again
    assert store.save(first) is False  # an old retry arriving late
    view = store.get(first.number)
    assert (view.revision, view.status, view.call.outcome) == (2, "queued", "routed")
    assert count(session_factory, Ticket) == 1 and count(session_factory, CallRecord) == 1


def test_late_snapshot_does_not_undo_an_agents_work(store, session_factory):
    snap = make_snapshot(confidential=True)
    store.save(snap)
    with session_factory.begin() as session:  # an agent took the call and classified it
        session.execute(update(Ticket).values(status="in_progress", category="noise", department="city-management"))
    late = snap.next(status="queued", category="traffic", confidential=False, ivr_path="language:1>main:2",
                     ended_at=T0 + timedelta(minutes=1), outcome="routed")
    assert store.save(late) is True
    view = store.get(snap.number)
    assert (view.status, view.category, view.department) == ("in_progress", "noise", "city-management")
    assert view.confidential is True  # a snapshot may set it, never clear it
    assert (view.ivr_path, view.revision, view.call.outcome) == ("language:1>main:2", 2, "routed")


def test_a_number_reused_by_another_call_is_refused(store):
    store.save(make_snapshot())
    other = make_snapshot(revision=2, created_at=T0 + timedelta(hours=1), caller="13900139000", uniqueid="1764300000.1")
    with pytest.raises(SnapshotConflict) as err:
        store.save(other)
    assert "13900139000" not in str(err.value)
    assert store.get(other.number).caller_raw == "13800138000"


def test_a_call_cannot_open_two_tickets(store):
    store.save(make_snapshot(number="2026112800001", uniqueid="1764297000.7"))
    with pytest.raises(SnapshotConflict, match="call 1764297000.7 already belongs"):
        store.save(make_snapshot(number="2026112800002", uniqueid="1764297000.7"))


def test_ticket_without_a_call(store):
    from orders.snapshot import TicketSnapshot

    snap = TicketSnapshot(number="2026112800003", revision=1, caller_raw="", caller_e164=None,
                          caller_kind="withheld", created_at=T0)
    assert store.save(snap)
    assert store.get(snap.number).calls == ()


def _run_together(count_, target):
    barrier = threading.Barrier(count_)
    results, errors = [None] * count_, []

    def run(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_concurrent_saves_of_the_same_snapshot_write_it_once(store, session_factory):
    snap = make_snapshot()
    results = _run_together(8, lambda i: store.save(snap))
    assert results.count(True) == 1 and results.count(False) == 7
    assert count(session_factory, Ticket) == 1 and count(session_factory, CallRecord) == 1


def test_concurrent_revisions_end_with_the_newest(store):
    base = make_snapshot()
    snaps = [base]
    for i in range(7):
        snaps.append(snaps[-1].next(ivr_path=f"step:{i}", status="queued"))
    random.Random(7).shuffle(snaps)
    _run_together(len(snaps), lambda i: store.save(snaps[i]))
    view = store.get(base.number)
    assert view.revision == 8 and view.ivr_path == "step:6"


def test_a_revision_written_between_our_read_and_our_write_wins(store, engine):
    """The compare-and-set, made deterministic: a rival save lands just before our UPDATE runs."""
    from sqlalchemy import event

    base = make_snapshot()
    store.save(base)
    ours, rivals = base.next(ivr_path="ours"), base.next(ivr_path="rival").next(ivr_path="rival")
    fired = []

    def rival_first(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE TICKETS") and not fired:
            fired.append(True)
            assert store.save(rivals) is True  # a second worker, on another connection

    event.listen(engine, "before_cursor_execute", rival_first)
    try:
        assert store.save(ours) is False
    finally:
        event.remove(engine, "before_cursor_execute", rival_first)
    assert fired
    view = store.get(base.number)
    assert (view.revision, view.ivr_path) == (3, "rival")


def test_search(store):
    for i in range(12):
        store.save(make_snapshot(
            number=f"20261128{i + 1:05d}", uniqueid=f"1.{i}", created_at=T0 + timedelta(minutes=i),
            status="queued" if i % 2 else "in_ivr", category="water" if i < 4 else "traffic",
            urgency="high" if i == 5 else "normal", language="en" if i == 7 else "zh-CN",
            caller="13900139000" if i in (3, 9) else "13800138000",
        ))
    views, total = store.search(TicketFilter())
    assert total == 12 and [v.number for v in views][:2] == ["2026112800012", "2026112800011"]
    assert all(v.call is not None for v in views)

    assert store.search(TicketFilter(status="queued"))[1] == 6
    assert store.search(TicketFilter(category="water", status="queued"))[1] == 2
    assert [v.number for v in store.search(TicketFilter(urgency="high"))[0]] == ["2026112800006"]
    assert [v.number for v in store.search(TicketFilter(language="en"))[0]] == ["2026112800008"]
    by_caller = store.search(TicketFilter(caller_e164="+8613900139000"))[0]
    assert [v.number for v in by_caller] == ["2026112800010", "2026112800004"]
    window = TicketFilter(created_from=T0 + timedelta(minutes=2), created_to=T0 + timedelta(minutes=5))
    assert [v.number for v in store.search(window)[0]] == ["2026112800005", "2026112800004", "2026112800003"]
    page, total = store.search(TicketFilter(limit=5, offset=10))
    assert total == 12 and [v.number for v in page] == ["2026112800002", "2026112800001"]
    assert store.search(TicketFilter(department="water-company")) == ([], 0)
    assert store.search(TicketFilter(channel="phone"))[1] == 12


@pytest.mark.parametrize(
    "kwargs, message",
    [({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset"), ({"status": "lost"}, "status"),
     ({"created_from": datetime(2026, 11, 28)}, "time zone")],
)
def test_bad_filters(kwargs, message):
    with pytest.raises(InvalidFilter, match=message):
        TicketFilter(**kwargs)


def test_unreachable_database_raises_storage_unavailable(database_url, tmp_path):
    engine = make_engine(unreachable_database_url(database_url, tmp_path))
    store_ = TicketStore(make_session_factory(engine))
    try:
        for call in (lambda: store_.save(make_snapshot()), lambda: store_.get("1"), lambda: store_.status_of("1"),
                     lambda: store_.search(TicketFilter()),
                     lambda: store_.recent_tickets([MOBILE], T0)):
            with pytest.raises(StorageUnavailable) as err:
                call()
            assert "13800138000" not in str(err.value) and err.value.__cause__ is None
    finally:
        engine.dispose()


# -- calls whose handler died ----------------------------------------------------------------------------

def test_stale_calls_are_settled_as_queued_without_a_new_revision(store):
    stale = make_snapshot(number="2026112800001", uniqueid="1.1", created_at=T0)
    fresh = make_snapshot(number="2026112800002", uniqueid="1.2", created_at=T0 + timedelta(hours=2))
    routed = make_snapshot(number="2026112800003", uniqueid="1.3", created_at=T0)
    for snap in (stale, fresh, routed.next(status="queued", outcome="routed")):
        store.save(snap)
    cutoff = T0 + timedelta(hours=1)
    assert store.settle_stale_calls(cutoff) == 1
    view = store.get(stale.number)
    assert (view.status, view.revision, view.call.outcome) == ("queued", 1, "fallback")
    assert store.get(fresh.number).status == "in_ivr"  # a call that may still be going on
    assert store.get(routed.number).call.outcome == "routed"
    assert store.settle_stale_calls(cutoff) == 0  # idempotent

    # The truth arrives later (a snapshot replayed from a spool): it wins over the guess.
    assert store.save(stale) is False  # the same revision again changes nothing
    truer = stale.next(now=T0 + timedelta(minutes=1), status="abandoned_in_ivr", outcome="abandoned_in_ivr",
                       ended_at=T0 + timedelta(minutes=1))
    assert store.save(truer) is True
    view = store.get(stale.number)
    assert (view.status, view.revision, view.call.outcome) == ("abandoned_in_ivr", 2, "abandoned_in_ivr")


def test_concurrent_settlers_settle_each_ticket_once(store, session_factory):
    for i in range(60):
        store.save(make_snapshot(number=f"20261128{i + 1:05d}", uniqueid=f"1.{i}", created_at=T0))
    cutoff = T0 + timedelta(hours=1)
    results = _run_together(4, lambda i: store.settle_stale_calls(cutoff))
    assert sum(results) == 60
    assert store.search(TicketFilter(status="queued", limit=100))[1] == 60
    with session_factory() as session:
        outcomes = session.scalars(select(CallRecord.outcome)).all()
    assert outcomes == ["fallback"] * 60


def test_settling_needs_an_aware_cutoff_and_a_database(store, database_url, tmp_path):
    with pytest.raises(ValueError, match="time zone"):
        store.settle_stale_calls(datetime(2026, 11, 28))
    engine = make_engine(unreachable_database_url(database_url, tmp_path))
    try:
        with pytest.raises(StorageUnavailable):
            TicketStore(make_session_factory(engine)).settle_stale_calls(T0)
    finally:
        engine.dispose()


# --- batches ---------------------------------------------------------------------------------------------


def test_a_batch_is_stored_as_each_snapshot_would_be(store):
    first = make_snapshot("2026112800301")
    batch = [first, first.next(T0 + timedelta(seconds=5), status="queued"), make_snapshot("2026112800302"),
             make_snapshot("2026112800301")]  # a stale repeat of revision 1 changes nothing
    store.save_many(batch)
    assert (store.get("2026112800301").status, store.get("2026112800301").revision) == ("queued", 2)
    assert store.get("2026112800302") is not None


def test_a_batch_with_a_clash_changes_nothing_and_says_so(store):
    from orders.errors import BatchNotApplied

    store.save(make_snapshot("2026112800311"))
    clash = make_snapshot("2026112800311", created_at=T0 + timedelta(hours=1), uniqueid="1764297000.999")
    with pytest.raises(BatchNotApplied):
        store.save_many([make_snapshot("2026112800312"), clash])
    assert store.get("2026112800312") is None  # rolled back with the batch: the writer saves each alone


def test_a_batch_on_an_unreachable_database_is_unavailable(tmp_path, database_url):
    down = TicketStore(make_session_factory(make_engine(unreachable_database_url(database_url, tmp_path))))
    with pytest.raises(StorageUnavailable):
        down.save_many([make_snapshot("2026112800321"), make_snapshot("2026112800322")])


def _statements(store):
    """A list that collects every SQL statement the store's engine runs from now on."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(store._engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_batch_of_distinct_tickets_costs_a_few_statements_not_some_per_ticket(store):
    openings = [make_snapshot(f"20261128004{i:02d}") for i in range(32)]
    seen = _statements(store)
    store.save_many(openings)
    assert len(seen) <= 4, seen  # read the rows, check the calls, insert the tickets, insert the calls
    closings = [s.next(T0 + timedelta(seconds=30), status="queued", outcome="routed", ended_at=T0 + timedelta(seconds=30))
                for s in openings]
    seen.clear()
    store.save_many(closings)
    assert len(seen) <= 3, seen  # read the rows, update the tickets, update their calls
    view = store.get("2026112800431")
    assert (view.revision, view.status, view.call.outcome) == (2, "queued", "routed")


def test_a_batch_whose_ticket_lost_its_call_record_gives_way_to_one_by_one(store, session_factory):
    from orders.errors import BatchNotApplied

    first = make_snapshot("2026112800501")
    store.save(first)
    with session_factory.begin() as session:
        session.execute(CallRecord.__table__.delete())
    with pytest.raises(BatchNotApplied):
        store.save_many([make_snapshot("2026112800502"), first.next(status="queued", outcome="routed")])
    assert store.get("2026112800502") is None  # rolled back: the writer then saves each alone
    store.save(first.next(status="queued", outcome="routed"))
    assert store.get("2026112800501").call.outcome == "routed"


def test_a_batch_with_a_call_that_already_has_its_ticket_gives_way(store):
    from orders.errors import BatchNotApplied

    store.save(make_snapshot("2026112800511", uniqueid="1764297000.77"))
    with pytest.raises(BatchNotApplied):
        store.save_many([make_snapshot("2026112800512", uniqueid="1764297000.77")])


_STATUSES = ["in_ivr", "queued", "abandoned_in_ivr", "dispatched", "closed"]


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.sampled_from(_STATUSES), st.booleans()),
                      min_size=1, max_size=14),
       cuts=st.lists(st.integers(1, 5), min_size=1, max_size=14))
def test_batches_end_where_saving_one_by_one_ends(store, steps, cuts):
    """Property: the writer's way (save_many, falling back to one by one) stores what saving each snapshot
    in order stores, whatever the mix of new tickets, newer and older revisions and call-less tickets
    (ticket 0 has no call record)."""
    from orders.errors import BatchNotApplied

    run = next(_RUNS)

    def snapshot(way: str, ticket: int, revision: int, status: str, confidential: bool):
        number = f"2026{run % 10000:04d}{way}{ticket}"
        when = T0 + timedelta(seconds=revision)
        values = dict(status=status, confidential=confidential, updated_at=when, category=f"c{revision}",
                      ivr_path=f"p{revision}", uniqueid=f"{number}.{ticket}" if ticket else None)
        if values["uniqueid"] is None:
            values.update(linkedid=None, call_channel=None, dialed_number=None)
        else:
            values.update(outcome="routed" if revision > 1 else None, ended_at=when if revision > 2 else None)
        return make_snapshot(number, revision=revision, **values)

    for way in "12":
        snapshots = [snapshot(way, *step) for step in steps]
        if way == "1":
            for snap in snapshots:
                store.save(snap)
            continue
        i = 0
        for cut in cuts * len(snapshots):
            batch, i = snapshots[i:i + cut], i + cut
            if not batch:
                break
            try:
                store.save_many(batch)
            except BatchNotApplied:
                for snap in batch:
                    store.save(snap)

    def stored(way: str):
        out = {}
        for ticket in range(3):
            view = store.get(f"2026{run % 10000:04d}{way}{ticket}")
            out[ticket] = None if view is None else (
                view.revision, view.status, view.confidential, view.category, view.ivr_path, view.updated_at,
                view.channel, [(c.outcome, c.ended_at) for c in view.calls])
        return out

    assert stored("2") == stored("1")


_RUNS = itertools.count(random.randrange(10000))


def test_the_repeat_caller_lookup_survives_a_dropped_connection(store):
    """The lookup keeps its connection: one that broke is replaced, not reused for ever."""
    from orders.errors import StorageError

    store.save(make_snapshot("2026112800601", caller="13900139000"))
    seen = [("+8613900139000", "2026112800601")]
    assert [row[:2] for row in store.recent_tickets(["+8613900139000"], T0)] == seen
    store._reader().connection.dbapi_connection.close()  # the server dropped it under us
    with pytest.raises(StorageError):
        store.recent_tickets(["+8613900139000"], T0)
    assert [row[:2] for row in store.recent_tickets(["+8613900139000"], T0)] == seen
    kept = store._reader()
    store.close()  # gives the kept connections back
    assert kept.closed and [row[:2] for row in store.recent_tickets(["+8613900139000"], T0)] == seen
