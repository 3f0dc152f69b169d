"""Live queue statistics in real Redis (queues/statistics.py): every figure on small hand-computed cases,
the recorded queue_log replayed, and live figures against figures rebuilt from a queue_log.

No test reads the clock: events carry their own times and every query passes ``now=``.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis as redis_lib

from base import metrics
from queues import statistics as queue_statistics
from queues.events import (
    AgentMissed,
    AgentRang,
    CallAnswered,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
    MemberAdded,
    MemberPaused,
    MemberStatus,
    OriginateResult,
    QueueSnapshot,
)
from queues.queue_log import read_queue_log
from queues.statistics import AbandonedCall, QueueFigures, QueueStatistics, rebuild
from tests.test_queue_log import FIXTURE

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


T = local(28, 10)  # 2026-11-28 10:00 in Shanghai, on a 5-minute boundary
assert T % 300 == 0


@pytest.fixture
def stats(redis_conn, redis_prefix):
    return QueueStatistics(redis_conn, prefix=redis_prefix)


def answered(queue, call_id, joined, hold, talk=None, *, caller="", ticket="", ended_by="caller"):
    events = [CallerJoined(joined, queue, call_id, caller, 1, ticket),
              CallAnswered(joined + hold, queue, call_id, "Agent A", hold)]
    if talk is not None:
        events.append(CallCompleted(joined + hold + talk, queue, call_id, "Agent A", hold, talk, ended_by))
    return events


def abandoned(queue, call_id, joined, wait, *, caller="", ticket=""):
    return [CallerJoined(joined, queue, call_id, caller, 1, ticket),
            CallerAbandoned(joined + wait, queue, call_id, wait, 1, 1)]


def counts(figures: QueueFigures) -> dict:
    return {k: v for k, v in figures.as_dict().items() if k not in ("queue", "day")}


ZERO = dict(waiting=0, longest_wait_seconds=0.0, offered=0, answered=0, abandoned=0, short_abandoned=0, gave_up=0,
            completed=0, answered_in_target=0, service_level=None, average_speed_of_answer=None,
            average_handle_time=None, connection_rate_24h=None)


# -- each figure by hand ---------------------------------------------------------------------------------


def test_nothing_yet(stats):
    figures = stats.figures(now=T)
    assert figures == QueueFigures(queue="", day="2026-11-28", **ZERO)
    assert stats.figures("hotline-zh", now=T).queue == "hotline-zh"
    assert stats.all_figures(now=T) == {"": figures}
    assert stats.abandoned() == []
    assert [f.name for f in fields(QueueFigures)] == ["queue", "day", *ZERO]


def test_service_level_at_exactly_15_s_and_at_16_s_with_speed_of_answer_and_handle_time(stats):
    stats.apply_many(answered("hotline-zh", "c1", T, 15, 100) + answered("hotline-zh", "c2", T + 1, 16, 200)
                     + answered("hotline-zh", "c3", T + 2, 5))  # c3 still talking
    expected = dict(ZERO, offered=3, answered=3, completed=2, answered_in_target=2, service_level=2 / 3,
                    average_speed_of_answer=12.0, average_handle_time=150.0, connection_rate_24h=1.0)
    assert counts(stats.figures("hotline-zh", now=T + 1000)) == expected
    assert counts(stats.figures(now=T + 1000)) == expected
    assert stats.figures(now=T + 1000).as_dict()["queue"] == ""


def test_recent_load_counts_the_calls_offered_in_the_last_half_hour_for_erlang_c(stats):
    stats.apply_many(answered("q", "old", T - 3600, 5, 100) + answered("q", "c1", T - 1200, 5, 200)
                     + abandoned("q", "c2", T - 60, 30))
    assert stats.recent_load("q", now=T) == (2, 150.0)
    assert stats.recent_load(now=T, seconds=7200) == (3, 150.0)
    assert stats.recent_load("empty", now=T) == (0, None)


def test_service_seconds_is_configurable(redis_conn, redis_prefix):
    stats = QueueStatistics(redis_conn, prefix=redis_prefix, service_seconds=20)
    stats.apply_many(answered("q", "c1", T, 16) + answered("q", "c2", T, 20) + answered("q", "c3", T, 21))
    assert stats.figures("q", now=T + 60).answered_in_target == 2


def test_short_abandons_are_counted_apart(redis_conn, redis_prefix, stats):
    events = (abandoned("hotline-zh", "c1", T, 4) + abandoned("hotline-zh", "c2", T + 1, 5)
              + answered("hotline-zh", "c3", T + 2, 10, 60))
    stats.apply_many(events)
    expected = dict(ZERO, offered=3, answered=1, abandoned=2, short_abandoned=1, completed=1, answered_in_target=1,
                    service_level=0.5, average_speed_of_answer=10.0, average_handle_time=60.0,
                    connection_rate_24h=0.5)  # 1 / (3 - 1): the 4 s abandon is out, the 5 s one is in
    assert counts(stats.figures("hotline-zh", now=T + 100)) == expected
    assert counts(stats.figures(now=T + 100)) == expected

    patient = QueueStatistics(redis_conn, prefix=redis_prefix + "ten:", short_abandon_seconds=10)
    patient.apply_many(events)
    figures = patient.figures("hotline-zh", now=T + 100)
    assert (figures.short_abandoned, figures.service_level, figures.connection_rate_24h) == (2, 1.0, 1.0)


def test_nothing_to_divide_gives_none(stats):
    stats.apply_many(abandoned("q", "c1", T, 2))
    figures = stats.figures("q", now=T + 10)
    assert (figures.offered, figures.short_abandoned) == (1, 1)
    assert figures.service_level is None and figures.connection_rate_24h is None
    assert figures.average_speed_of_answer is None and figures.average_handle_time is None


def test_callers_waiting_and_the_longest_wait(stats):
    stats.apply_many([CallerJoined(T, "q1", "c1"), CallerJoined(T + 30, "q1", "c2"), CallerJoined(T + 10, "q2", "c3")])
    q1, q2, hotline = (stats.figures(q, now=T + 40) for q in ("q1", "q2", None))
    assert (q1.waiting, q1.longest_wait_seconds) == (2, 40.0)
    assert (q2.waiting, q2.longest_wait_seconds) == (1, 30.0)
    assert (hotline.waiting, hotline.longest_wait_seconds, hotline.offered) == (3, 40.0, 3)
    stats.apply(CallAnswered(T + 45, "q1", "c1", "Agent A", 45))
    q1, hotline = stats.figures("q1", now=T + 50), stats.figures(now=T + 50)
    assert (q1.waiting, q1.longest_wait_seconds) == (1, 20.0)
    assert (hotline.waiting, hotline.longest_wait_seconds) == (2, 40.0)  # c3 in q2 since T + 10
    stats.apply(CallerAbandoned(T + 60, "q2", "c3", 50))
    stats.apply(CallerGaveUp(T + 90, "q1", "c2", 60))
    assert (stats.figures(now=T + 100).waiting, stats.figures(now=T + 100).longest_wait_seconds) == (0, 0.0)


def test_a_caller_who_gives_up_is_neither_answered_nor_abandoned(stats):
    stats.apply_many([CallerJoined(T, "hotline-zh", "c1"), CallerGaveUp(T + 60, "hotline-zh", "c1", 60, "timeout")])
    expected = dict(ZERO, offered=1, gave_up=1, service_level=0.0, connection_rate_24h=0.0)
    assert counts(stats.figures("hotline-zh", now=T + 61)) == expected
    assert counts(stats.figures(now=T + 61)) == expected


def test_an_overflowed_call_counts_once_for_the_hotline_with_its_whole_wait(stats):
    # traffic-zh times out after 60 s and the dialplan sends the caller on to hotline-zh (extensions.conf).
    stats.apply_many([CallerJoined(T, "traffic-zh", "c1", "13800000001"), CallerGaveUp(T + 60, "traffic-zh", "c1", 60),
                      CallerJoined(T + 61, "hotline-zh", "c1", "13800000001"),
                      CallAnswered(T + 71, "hotline-zh", "c1", "Agent A", 10)])
    assert counts(stats.figures("traffic-zh", now=T + 80)) == dict(ZERO, offered=1, gave_up=1, service_level=0.0,
                                                                   connection_rate_24h=0.0)
    assert counts(stats.figures("hotline-zh", now=T + 80)) == dict(
        ZERO, offered=1, answered=1, answered_in_target=1, service_level=1.0, average_speed_of_answer=10.0,
        connection_rate_24h=1.0)
    assert counts(stats.figures(now=T + 80)) == dict(
        ZERO, offered=1, answered=1, service_level=0.0, average_speed_of_answer=70.0, connection_rate_24h=1.0)

    # Another overflows, then gives up in hotline-zh too (the all-busy message): one hotline give-up.
    stats.apply_many([CallerJoined(T + 100, "urgent-zh", "c2"), CallerGaveUp(T + 160, "urgent-zh", "c2", 60)])
    assert stats.figures(now=T + 161).gave_up == 1
    stats.apply(CallerJoined(T + 161, "hotline-zh", "c2"))
    assert stats.figures(now=T + 162).gave_up == 0
    stats.apply(CallerGaveUp(T + 761, "hotline-zh", "c2", 600))
    hotline = stats.figures(now=T + 800)
    assert (hotline.offered, hotline.answered, hotline.gave_up) == (2, 1, 1)
    assert stats.figures("hotline-zh", now=T + 800).gave_up == 1

    # A third abandons 3 s into hotline-zh after 60 s in traffic-zh: short there, not for the hotline.
    stats.apply_many([CallerJoined(T + 900, "traffic-zh", "c3", "13800000003"),
                      CallerGaveUp(T + 960, "traffic-zh", "c3", 60), CallerJoined(T + 960, "hotline-zh", "c3"),
                      CallerAbandoned(T + 963, "hotline-zh", "c3", 3)])
    assert stats.abandoned() == [AbandonedCall("c3", "hotline-zh", "13800000003", "", T + 963, 63.0, False)]
    assert stats.abandoned(queue="hotline-zh") == [AbandonedCall("c3", "hotline-zh", "13800000003", "", T + 963, 3.0,
                                                                 True)]
    hotline, general = stats.figures(now=T + 1000), stats.figures("hotline-zh", now=T + 1000)
    assert (hotline.abandoned, hotline.short_abandoned, general.abandoned, general.short_abandoned) == (1, 0, 1, 1)


def test_day_counters_reset_at_shanghai_midnight(stats):
    before, after = local(28, 23, 59, 59), local(29, 0, 0, 1)
    stats.apply_many(answered("q", "c1", before, 0) + answered("q", "c2", after, 0))
    late, early = stats.figures("q", now=before + 0.5), stats.figures("q", now=after + 0.5)
    assert (late.day, late.offered, late.answered) == ("2026-11-28", 1, 1)
    assert (early.day, early.offered, early.answered) == ("2026-11-29", 1, 1)
    assert early.connection_rate_24h == 1.0 and stats.figures("q", now=after).offered == 1  # the 24 h window spans both
    # UTC midnight (08:00 in Shanghai) is no boundary here.
    stats.apply_many(answered("q", "c3", local(29, 7, 59, 59), 0) + answered("q", "c4", local(29, 8, 0, 1), 0))
    assert stats.figures("q", now=local(29, 9)).offered == 3


def test_the_day_follows_the_configured_zone(redis_conn, redis_prefix):
    stats = QueueStatistics(redis_conn, prefix=redis_prefix, timezone="UTC")
    stats.apply_many([CallerJoined(local(29, 7, 59, 59), "q", "c1"), CallerJoined(local(29, 8, 0, 1), "q", "c2")])
    figures = stats.figures("q", now=local(29, 8, 0, 2))
    assert (figures.day, figures.offered, figures.waiting) == ("2026-11-29", 1, 2)
    with pytest.raises(ValueError, match="time zone"):
        QueueStatistics(redis_conn, prefix=redis_prefix, timezone="Mars/Olympus")


def test_the_24_hour_window_edge(stats):
    # Buckets of 5 minutes: an event counts while its bucket is one of the 288 latest (the current one
    # included). So it drops out 24 h after its bucket began: between 23 h 55 min and 24 h after it happened.
    stats.apply_many(answered("q", "c1", T, 10) + [CallerJoined(T + 299, "q", "c2")]
                     + answered("q", "c3", T + 600, 10))
    assert stats.figures("q", now=T + 86399).connection_rate_24h == pytest.approx(2 / 3)
    at_edge = stats.figures("q", now=T + 86400)  # c1's and c2's bucket (T .. T+299) is out, c3's still in
    assert at_edge.connection_rate_24h == 1.0 and at_edge.offered == 0  # (a new day: day counters are zero)
    assert stats.figures("q", now=T + 600 + 86399).connection_rate_24h == 1.0
    assert stats.figures("q", now=T + 600 + 86400).connection_rate_24h is None
    assert stats.figures(now=T + 600 + 86400).connection_rate_24h is None


def test_the_window_drops_what_a_quiet_spell_left_behind(stats, redis_conn, redis_prefix, monkeypatch):
    monkeypatch.setattr(queue_statistics, "WINDOW_FIELDS_SWEPT", 0)  # sweep on every query
    old = local(1, 10, month=10)  # long past, so the wall clock never holds the sweep back
    stats.apply_many(answered("q", "c1", old, 5) + answered("q", "c2", old + 7200, 5))
    window = f"{redis_prefix}qs:window:q"
    assert redis_conn.hlen(window) == 4  # a 5-minute bucket and an hour for each
    assert stats.figures("q", now=old + 7300).connection_rate_24h == 1.0 and redis_conn.hlen(window) == 4
    assert stats.figures("q", now=old + 86400 + 300).connection_rate_24h == 1.0  # c2 still in
    assert sorted(redis_conn.hkeys(window)) == [f"h{old + 7200:.0f}".encode(), f"m{old + 7200:.0f}".encode()]


def test_the_abandoned_list_newest_first_and_capped(redis_conn, redis_prefix):
    stats = QueueStatistics(redis_conn, prefix=redis_prefix, abandoned_kept=3)
    calls = [abandoned("hotline-zh", f"c{i}", T + 10 * i, i + 3, caller=f"1380000000{i}", ticket=f"202611280000{i}")
             for i in range(5)]
    stats.apply_many(calls[4] + calls[0] + calls[1] + calls[3] + calls[2])  # the order they arrive in is not the order
    listed = stats.abandoned()
    assert listed == [AbandonedCall(f"c{i}", "hotline-zh", f"1380000000{i}", f"202611280000{i}", T + 10 * i + i + 3,
                                    float(i + 3), i + 3 < 5) for i in (4, 3, 2)]
    assert stats.abandoned(limit=2) == listed[:2]
    assert stats.abandoned(queue="hotline-zh") == listed
    assert stats.abandoned(queue="urgent-zh") == []
    assert stats.figures(now=T + 100).abandoned == 5  # the cap is the list's, not the count's
    # The caller and ticket of the abandon event win over the join's.
    stats.apply_many([CallerJoined(T + 200, "urgent-zh", "c9", "13800000009"),
                      CallerAbandoned(T + 230, "urgent-zh", "c9", 30, caller="13900000009", ticket="2026112800009")])
    assert stats.abandoned(limit=1)[0] == AbandonedCall("c9", "urgent-zh", "13900000009", "2026112800009", T + 230,
                                                        30.0, False)


def test_an_event_applied_twice_counts_once(stats, redis_conn, redis_prefix):
    events = (answered("q", "c1", T, 5, 60) + abandoned("q", "c2", T + 1, 20) + abandoned("q", "c3", T + 2, 1)
              + [CallerJoined(T + 3, "q", "c4"), CallerGaveUp(T + 63, "q", "c4", 60), CallerJoined(T + 4, "q", "c5")])
    once = QueueStatistics(redis_conn, prefix=redis_prefix + "once:")
    once.apply_many(events)
    stats.apply_many(events)
    for event in events:  # a reconnect replays them one by one
        stats.apply(event)
    stats.apply_many([e for event in events for e in (event, event)])  # and twice within one batch
    for queue in ("q", None):
        assert stats.figures(queue, now=T + 100) == once.figures(queue, now=T + 100)
    assert counts(once.figures("q", now=T + 100)) == dict(
        ZERO, waiting=1, longest_wait_seconds=96.0, offered=5, answered=1, abandoned=2, short_abandoned=1, gave_up=1,
        completed=1, answered_in_target=1, service_level=0.25, average_speed_of_answer=5.0,
        average_handle_time=60.0, connection_rate_24h=0.25)
    assert stats.abandoned() == once.abandoned() and len(once.abandoned()) == 2


def test_a_join_arriving_after_its_answer_leaves_nobody_waiting(stats):
    stats.apply(CallAnswered(T + 5, "q", "c1", "Agent A", 5))
    stats.apply(CallerJoined(T, "q", "c1"))
    stats.apply_many([CallerAbandoned(T + 9, "q", "c2", 4), CallerJoined(T + 5, "q", "c2")])  # in one batch
    figures = stats.figures("q", now=T + 10)
    assert (figures.waiting, figures.offered, figures.answered, figures.abandoned) == (0, 2, 1, 1)


def test_a_snapshot_replaces_the_waiting_callers_of_its_queue_only(stats):
    stats.apply_many([CallerJoined(T, "q1", "c1"), CallerJoined(T + 5, "q1", "c2"), CallerJoined(T + 6, "q2", "c9")])
    stats.apply(QueueSnapshot(T + 20, "q1", callers=(CallerJoined(T + 5, "q1", "c2", "13800000002"),
                                                      CallerJoined(T + 7, "q1", "c3", "13800000003"))))
    q1, q2 = stats.figures("q1", now=T + 30), stats.figures("q2", now=T + 30)
    assert (q1.waiting, q1.longest_wait_seconds, q1.offered) == (2, 25.0, 2)  # c1 is gone, c3 not counted as offered
    assert (q2.waiting, q2.offered) == (1, 1)
    stats.apply(CallerAbandoned(T + 37, "q1", "c3", 30))
    assert stats.figures("q1", now=T + 40).waiting == 1
    assert stats.abandoned()[0].caller == "13800000003"  # the snapshot's caller ID is kept for the call-back list
    stats.apply(QueueSnapshot(T + 50, "q1"))
    assert stats.figures("q1", now=T + 60).waiting == 0 and stats.figures(now=T + 60).waiting == 1


def test_other_events_are_ignored(stats):
    stats.apply_many([MemberAdded(T, "q", "PJSIP/agent1001", "Agent A"), MemberPaused(T, "q", "Agent A", True, "lunch"),
                      AgentRang(T, "q", "c1", "Agent A"), AgentMissed(T, "q", "c1", "Agent A", 15.0),
                      MemberStatus(T, "q", "PJSIP/agent1001", "Agent A", 2), OriginateResult(T, "o1", True, 4),
                      CallerJoined(T, "", "c0")])  # (a join without a queue says nothing)
    assert stats.all_figures(now=T + 1) == {"": QueueFigures(queue="", day="2026-11-28", **ZERO)}


def test_all_figures_lists_todays_queues_and_queues_with_callers_waiting(stats):
    stats.apply_many(answered("yesterday-only", "c1", local(27, 12), 3, 30)
                     + [CallerJoined(local(27, 23, 50), "night", "c2")]
                     + answered("hotline-zh", "c3", local(28, 9), 3) + abandoned("urgent-zh", "c4", local(28, 9), 30))
    everything = stats.all_figures(now=local(28, 10))
    assert sorted(everything) == ["", "hotline-zh", "night", "urgent-zh"]
    assert everything["night"].waiting == 1 and everything["night"].offered == 0
    assert everything["night"].longest_wait_seconds == 10 * 60 * 60 + 10 * 60
    assert everything[""] == stats.figures(now=local(28, 10))
    assert all(everything[q] == stats.figures(q, now=local(28, 10)) for q in everything if q)
    assert (everything[""].offered, everything[""].waiting) == (2, 1)


def test_each_batch_is_published_for_the_wallboard(stats, redis_conn, redis_prefix):
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{redis_prefix}changed")
    pubsub.get_message(timeout=1.0)  # the subscription itself
    try:
        stats.apply_many(answered("q1", "c1", T, 3) + [CallerJoined(T, "q2", "c2")])
        message = pubsub.get_message(timeout=5.0)
        assert message is not None and json.loads(message["data"]) == {"queues": ["q1", "q2"], "events": 3}
    finally:
        pubsub.close()


class _CommandCount:
    """Counts the Redis commands the statistics send: every one goes through a pipeline."""

    def __init__(self, monkeypatch, client):
        self.sent = 0
        execute = redis_lib.client.Pipeline.execute

        def counted(pipe, *args, **kwargs):
            self.sent += len(pipe.command_stack)
            return execute(pipe, *args, **kwargs)

        monkeypatch.setattr(redis_lib.client.Pipeline, "execute", counted)
        monkeypatch.setattr(client, "execute_command",
                            lambda *a, **k: pytest.fail(f"a command outside a pipeline: {a}"))


def test_a_fixed_number_of_commands_per_event_whatever_the_history(stats, redis_conn, monkeypatch):
    def calls(start: int, n: int) -> list:
        out = []
        for i in range(start, start + n):
            out += (answered("q", f"c{i}", T + i, 5, 30) if i % 2 else abandoned("q", f"c{i}", T + i, 20))
        return out

    stats.apply_many(calls(0, 10))
    counter = _CommandCount(monkeypatch, redis_conn)
    stats.apply_many(calls(10, 10))
    early = counter.sent
    monkeypatch.undo()
    stats.apply_many(calls(20, 2000))
    counter = _CommandCount(monkeypatch, redis_conn)
    stats.apply_many(calls(2020, 10))
    assert counter.sent == early, (counter.sent, early)
    assert 0 < early <= 10 * len(calls(0, 10)), early
    monkeypatch.undo()
    assert stats.figures("q", now=T + 3000).offered == 2030


def test_events_applied_are_counted_in_the_metrics(stats):
    def applied() -> float:
        return metrics.registry().get_sample_value("hotline_queue_events_applied_total") or 0.0

    before = applied()
    stats.apply_many(answered("q", "c1", T, 3, 10) + [MemberAdded(T, "q", "PJSIP/agent1001")])
    assert applied() - before == 3


def test_clear_and_rebuild(stats):
    events = answered("q", "c1", T, 3, 10) + abandoned("q", "c2", T, 30) + [CallerJoined(T + 5, "q", "c3")]
    stats.apply_many(events)
    before = stats.all_figures(now=T + 60), stats.abandoned()
    stats.clear()
    assert stats.all_figures(now=T + 60) == {"": QueueFigures(queue="", day="2026-11-28", **ZERO)}
    assert stats.abandoned() == []
    stats.apply(CallerJoined(T + 6, "other", "c9"))  # rebuild starts from nothing
    assert rebuild(stats, iter(events), batch=2) == len(events)
    assert (stats.all_figures(now=T + 60), stats.abandoned()) == before


def test_settings_are_checked(redis_conn, redis_prefix):
    for bad in (dict(service_seconds=-1), dict(short_abandon_seconds=-1), dict(abandoned_kept=0), dict(prefix="")):
        with pytest.raises(ValueError):
            QueueStatistics(redis_conn, **{"prefix": redis_prefix, **bad})


# -- the recorded queue_log ----------------------------------------------------------------------------------


def test_the_recorded_queue_log_replayed(stats):
    reader = read_queue_log(FIXTURE.splitlines())
    assert rebuild(stats, reader) == 18 and reader.skipped == 0
    now = 1795846333.0
    expected = dict(ZERO, offered=5, answered=3, abandoned=2, short_abandoned=1, completed=3, answered_in_target=3,
                    service_level=0.75, average_speed_of_answer=3.0, average_handle_time=5.0,
                    connection_rate_24h=0.75)
    figures = stats.all_figures(now=now)
    assert sorted(figures) == ["", "support"]
    assert figures["support"] == QueueFigures(queue="support", day="2026-11-28", **expected)
    assert figures[""] == QueueFigures(queue="", day="2026-11-28", **expected)
    assert stats.abandoned() == stats.abandoned(queue="support") == [
        AbandonedCall("1795846294.4", "support", "5550001111", "", 1795846305.0, 11.0, False),
        AbandonedCall("1795846287.2", "support", "5557654321", "", 1795846291.0, 3.0, True)]


# -- live against rebuilt, on a long generated stream -----------------------------------------------------------

QUEUES = ["hotline-zh", "urgent-zh", "traffic-zh", "hotline-en"]
START, END = local(27, 18), local(29, 2)  # 32 hours over three local days (two midnights)


def generated_stream(seed: int = 12345) -> tuple[list, list[str], list[tuple]]:
    """Calls through the four queues as the live events (with tickets, as AMI gives them) and the queue_log
    lines Asterisk writes for them, in time order; only what happened before END. Also (day, queue, kind)
    for each join, answer, abandon, timeout and empty queue, and (day, "", "call") for each call, to check
    the counts independently."""
    rng = random.Random(seed)
    steps: list[tuple[float, int, int, object, str]] = []
    outcomes: list[tuple] = []
    t, n = START, 0

    def day(at: float) -> str:
        return datetime.fromtimestamp(at, SHANGHAI).date().isoformat()

    def emit(at, step, event, line):
        steps.append((at, n, step, event, line))

    def through(queue, at, caller, ticket, step, call_id) -> tuple[str, float]:
        """One stay in ``queue`` from ``at``: returns how it ended and when."""
        emit(at, step, CallerJoined(at, queue, call_id, caller, 1, ticket),
             f"{at:.0f}|{call_id}|{queue}|NONE|ENTERQUEUE||{caller}|1")
        outcomes.append((day(at), queue, "offered"))
        roll = rng.random()
        if queue != "hotline-zh" and roll < 0.1:  # times out; the dialplan moves the caller on
            wait = 60
            emit(at + wait, step + 1, CallerGaveUp(at + wait, queue, call_id, wait, "timeout", caller, ticket),
                 f"{at + wait:.0f}|{call_id}|{queue}|NONE|EXITWITHTIMEOUT|1|1|{wait}")
            outcomes.append((day(at + wait), queue, "timeout"))
            return "overflow", at + wait
        if queue == "hotline-en" and roll < 0.15:
            wait = rng.randint(0, 20)
            emit(at + wait, step + 1, CallerGaveUp(at + wait, queue, call_id, wait, "empty", caller, ticket),
                 f"{at + wait:.0f}|{call_id}|{queue}|NONE|EXITEMPTY|1|1|{wait}")
            outcomes.append((day(at + wait), queue, "empty"))
            return "gave_up", at + wait
        if roll < 0.3:
            wait = rng.randint(0, 90)
            emit(at + wait, step + 1, CallerAbandoned(at + wait, queue, call_id, wait, 1, 1, caller, ticket),
                 f"{at + wait:.0f}|{call_id}|{queue}|NONE|ABANDON|1|1|{wait}")
            outcomes.append((day(at + wait), queue, "abandoned"))
            return "abandoned", at + wait
        hold, talk = rng.randint(0, 40), rng.randint(10, 900)
        agent = f"Agent {rng.randint(1, 30)}"
        if hold > 20:
            emit(at + 15, step + 1, AgentMissed(at + 15, queue, call_id, agent, 15.0),
                 f"{at + 15:.0f}|{call_id}|{queue}|{agent}|RINGNOANSWER|15000")
        emit(at + hold, step + 2, CallAnswered(at + hold, queue, call_id, agent, hold, 2, ticket=ticket),
             f"{at + hold:.0f}|{call_id}|{queue}|{agent}|CONNECT|{hold}|{call_id}1|2")
        outcomes.append((day(at + hold), queue, "answered"))
        end = at + hold + talk
        ended_by = rng.choice(["caller", "agent", "transfer"])
        line = (f"{end:.0f}|{call_id}|{queue}|{agent}|TRANSFER|2000|agents|{hold}|{talk}|1" if ended_by == "transfer"
                else f"{end:.0f}|{call_id}|{queue}|{agent}|COMPLETE{ended_by.upper()}|{hold}|{talk}|1")
        emit(end, step + 3, CallCompleted(end, queue, call_id, agent, hold, talk, ended_by, ticket=ticket), line)
        return "answered", end

    while t < END:
        t += rng.randint(5, 70)
        n += 1
        call_id, caller = f"{t:.0f}.{n}", f"138{rng.randint(0, 10 ** 8 - 1):08d}"
        ticket = f"{day(t).replace('-', '')}{n:05d}" if rng.random() < 0.9 else ""
        queue = rng.choices(QUEUES, weights=[5, 2, 2, 1])[0]
        outcomes.append((day(t), "", "call"))
        how, at = through(queue, t, caller, ticket, 0, call_id)
        if how == "overflow":
            through("hotline-zh", at, caller, ticket, 10, call_id)
    steps.sort(key=lambda s: (s[0], s[1], s[2]))
    kept = [s for s in steps if s[0] <= END]
    return [s[3] for s in kept], [s[4] + "\n" for s in kept], outcomes


def test_live_figures_agree_with_figures_rebuilt_from_the_queue_log(redis_conn, redis_prefix):
    events, lines, outcomes = generated_stream()
    assert len(events) > 8000

    live = QueueStatistics(redis_conn, prefix=redis_prefix + "live:")
    rng = random.Random(7)
    i = 0
    while i < len(events):  # batches of any size, with some events arriving twice (a reconnect)
        batch = events[i:i + rng.randint(1, 60)]
        live.apply_many(batch)
        if rng.random() < 0.1:
            live.apply_many(batch[: rng.randint(1, len(batch))])
        i += len(batch)

    rebuilt = QueueStatistics(redis_conn, prefix=redis_prefix + "rebuilt:")
    reader = read_queue_log(lines)
    rebuild(rebuilt, reader)
    assert reader.skipped == 0

    def without_tickets(calls):  # the queue_log carries no ticket; everything else must agree
        return [replace(c, ticket="") for c in calls]

    for now in (local(28, 12), local(28, 23, 59, 59), END):  # in time order: a query prunes the window
        live_figures, rebuilt_figures = live.all_figures(now=now), rebuilt.all_figures(now=now)
        assert live_figures == rebuilt_figures
        assert set(live_figures) == {"", *QUEUES}
    for queue in (None, *QUEUES):
        assert without_tickets(live.abandoned(queue=queue, limit=500)) == rebuilt.abandoned(queue=queue, limit=500)
    assert any(c.ticket for c in live.abandoned(limit=500))

    # The live figures are the stream's own: counted independently from the generated calls.
    day28 = {q: live.figures(q, now=local(28, 12)) for q in QUEUES}
    def happened(queue, kind):
        return outcomes.count(("2026-11-28", queue, kind))

    for queue in QUEUES:
        for kind in ("offered", "answered", "abandoned"):
            assert getattr(day28[queue], kind) == happened(queue, kind), (queue, kind)
        assert day28[queue].gave_up == happened(queue, "timeout") + happened(queue, "empty")
    hotline = live.figures(now=local(28, 12))
    assert hotline.offered == happened("", "call") < sum(f.offered for f in day28.values())  # overflows
    assert hotline.answered == sum(happened(q, "answered") for q in QUEUES)
    assert hotline.gave_up == sum(happened(q, "empty") for q in QUEUES) > 0  # the timeouts moved on
    assert hotline.abandoned > 0 and hotline.short_abandoned > 0 and day28["traffic-zh"].gave_up > 0
    hotline = live.figures(now=END)
    assert hotline.waiting > 0 and hotline.day == "2026-11-29"
    assert 0 < hotline.connection_rate_24h < 1 and 0 < hotline.service_level < 1
