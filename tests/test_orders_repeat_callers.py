"""RepeatCallers: whether a caller opened a ticket recently, asked by many calls and answered in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orders.errors import StorageUnavailable
from orders.repeat_callers import RepeatCallers
from tests.orders_fixtures import T0, make_snapshot, store  # noqa: F401

DAY = timedelta(hours=24)


def test_questions_asked_together_are_answered_with_one_query(store):
    store.save(make_snapshot("2026112800001", caller="13800138000"))  # at T0
    store.save(make_snapshot("2026112800002", caller="13900139000", created_at=T0 - timedelta(hours=30)))
    queries = []
    real = store.recent_tickets
    store.recent_tickets = lambda callers, since: queries.append(sorted(callers)) or real(callers, since)
    lookup = RepeatCallers(store, DAY, linger=3600, max_batch=4)  # an hour's linger: a full batch goes at once
    now = T0 + timedelta(hours=1)
    answers = [lookup.ask("+8613800138000", "2026112800010", now),  # called at T0: a repeat caller
               lookup.ask("+8613800138000", "2026112800001", now),  # that call itself: not a repeat
               lookup.ask("+8613900139000", "2026112800011", now),  # 30 hours ago: outside the window
               lookup.ask("+8613700137000", "2026112800012", now)]  # never called
    assert [a.result(timeout=10) for a in answers] == [True, False, False, False]
    assert len(queries) == 1 and len(queries[0]) == 4
    lookup.close()


def test_a_lone_question_is_answered_after_the_linger(store):
    store.save(make_snapshot("2026112800101", caller="13800138000"))
    lookup = RepeatCallers(store, DAY, linger=0.001)
    assert lookup.ask("+8613800138000", "2026112800102", T0 + timedelta(minutes=5)).result(timeout=10) is True
    lookup.close()


def test_no_number_and_a_closed_lookup_answer_no_at_once(store):
    lookup = RepeatCallers(store, DAY, linger=3600)
    assert lookup.ask(None, "2026112800201", T0).result(timeout=0) is False
    waiting = lookup.ask("+8613800138000", "2026112800202", T0)
    lookup.close()
    assert waiting.result(timeout=10) is False
    assert lookup.ask("+8613800138000", "2026112800203", T0).result(timeout=0) is False


def test_a_database_that_fails_answers_no(store):
    def down(callers, since):
        raise StorageUnavailable("the ticket database cannot be reached")

    store.recent_tickets = down
    lookup = RepeatCallers(store, DAY, linger=0)
    assert lookup.ask("+8613800138000", "2026112800301", T0).result(timeout=10) is False
    lookup.close()


def test_a_bug_reaches_the_callers_future(store):
    store.recent_tickets = lambda callers, since: 1 / 0
    lookup = RepeatCallers(store, DAY, linger=0)
    with pytest.raises(ZeroDivisionError):
        lookup.ask("+8613800138000", "2026112800401", T0).result(timeout=10)
    lookup.close()


def test_recent_tickets_of_several_callers(store):
    store.save(make_snapshot("2026112800501", caller="13800138000"))
    store.save(make_snapshot("2026112800502", caller="13800138000", created_at=T0 + timedelta(hours=2),
                             uniqueid="1764297000.502"))
    store.save(make_snapshot("2026112800503", caller="13900139000", created_at=T0 - DAY, uniqueid="1764297000.503"))
    rows = store.recent_tickets(["+8613800138000", "+8613900139000", "+8613800138000"], T0)
    assert sorted((caller, number) for caller, number, _ in rows) == [
        ("+8613800138000", "2026112800501"), ("+8613800138000", "2026112800502")]
    assert all(created.tzinfo is not None for *_, created in rows)
    assert store.recent_tickets([], T0) == []
