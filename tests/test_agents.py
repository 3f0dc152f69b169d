"""Agents: the store (SQLite and PostgreSQL), pause reasons, the migration, the presence state machine fed
by queue events (real Redis), its pub/sub messages, and the desk's requests to Asterisk."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from base.db import Base, make_engine, make_session_factory
from hotline import migrate
from queues import events as ev
from queues.agents import (
    AUTO_PAUSE,
    PAUSE_REASONS,
    AgentExists,
    AgentInactive,
    AgentNotFound,
    AgentStore,
    AgentStoreUnavailable,
    InvalidAgent,
    InvalidPauseReason,
    ServedQueue,
    known_pause_reason,
    pause_reason_by_digit,
    pause_reason_text,
)
from queues.control import NoQueueControl, QueueControlError, QueueControlUnavailable
from queues.desk import AgentDesk, DeskRequest
from queues.presence import AgentPresence, AgentStatus
from tests.orders_fixtures import unreachable_database_url

T0 = 1_800_000_000.0
IFACE = "PJSIP/agent1001"


@pytest.fixture
def store(session_factory):
    return AgentStore(session_factory)


@pytest.fixture
def presence(redis_conn, redis_prefix):
    return AgentPresence(redis_conn, prefix=redis_prefix, wrap_up_seconds=20)


def add(queue="hotline-zh", code="1001", at=T0, paused=False, reason="", penalty=0):
    return ev.MemberAdded(at, queue, f"PJSIP/agent{code}", code, penalty, paused, reason)


def status(queue, code, device, at, paused=False, reason="", in_call=False):
    return ev.MemberStatus(at, queue, f"PJSIP/agent{code}", code, device, paused, reason, in_call)


# -- the store -------------------------------------------------------------------------------------------


def test_add_get_list_and_find_by_phone(store):
    agent = store.add("1001", "  王芳 ", IFACE, languages=["zh-CN", "en"], topics=["traffic", "urgent", "traffic"],
                      queues={"hotline-zh": 0, "traffic-zh": 2})
    assert (agent.code, agent.name, agent.interface, agent.languages, agent.topics, agent.active) == (
        "1001", "王芳", IFACE, ("zh-CN", "en"), ("traffic", "urgent"), True)
    assert agent.language == "zh-CN"
    assert agent.queues == (ServedQueue("hotline-zh", 0), ServedQueue("traffic-zh", 2))
    assert store.get("1001") == agent == store.by_interface(IFACE)
    store.add("1002", "John", "PJSIP/agent1002", languages=["en"], queues=["hotline-en"], active=False)
    assert [a.code for a in store.list()] == ["1001", "1002"]
    assert [a.code for a in store.list(include_inactive=False)] == ["1001"]
    assert store.get("1002").queues == (ServedQueue("hotline-en", 0),)


def test_update_set_queues_and_remove(store):
    store.add("1001", "Wang", IFACE, queues={"hotline-zh": 0})
    changed = store.update("1001", name="Wang Fang", interface="PJSIP/agent2001", languages=["en", "zh-CN"],
                           topics=[], active=False)
    assert (changed.name, changed.interface, changed.languages, changed.topics, changed.active) == (
        "Wang Fang", "PJSIP/agent2001", ("en", "zh-CN"), (), False)
    assert store.update("1001").name == "Wang Fang"  # nothing given: nothing changed
    assert store.set_queues("1001", [ServedQueue("urgent-zh", 1), ("hotline-zh", 3)]).queues == (
        ServedQueue("urgent-zh", 1), ServedQueue("hotline-zh", 3))
    assert store.set_queues("1001", {}).queues == ()
    store.remove("1001")
    with pytest.raises(AgentNotFound):
        store.get("1001")
    with pytest.raises(AgentNotFound):
        store.by_interface("PJSIP/agent2001")
    with pytest.raises(AgentNotFound):
        store.remove("1001")


@pytest.mark.parametrize("kwargs, words", [
    (dict(code="10 01"), "agent code"),
    (dict(code=""), "agent code"),
    (dict(code="x" * 21), "agent code"),
    (dict(interface="agent1001"), "TECH/resource"),
    (dict(interface="PJSIP/agent,1001"), "TECH/resource"),
    (dict(name="  "), "name"),
    (dict(languages=["fr"]), "languages"),
    (dict(languages=[]), "languages"),
    (dict(languages=["en", "en"]), "languages"),
    (dict(topics=["Traffic!"]), "topic"),
    (dict(queues={"hotline zh": 0}), "queue name"),
    (dict(queues={"hotline-zh,x": 0}), "queue name"),
    (dict(queues={"hotline-zh": -1}), "penalty"),
    (dict(queues={"hotline-zh": 1001}), "penalty"),
    (dict(queues=[("hotline-zh", 0), ("hotline-zh", 1)]), "twice"),
])
def test_bad_input_is_refused_with_a_clear_message(store, kwargs, words):
    args = dict(code="1001", name="Wang", interface=IFACE) | kwargs
    with pytest.raises(InvalidAgent, match=words):
        store.add(args.pop("code"), args.pop("name"), args.pop("interface"), **args)
    assert store.list() == []


def test_code_and_phone_are_unique(store):
    store.add("1001", "Wang", IFACE)
    with pytest.raises(AgentExists, match="1001 exists"):
        store.add("1001", "Li", "PJSIP/agent1009")
    with pytest.raises(AgentExists, match="phone of agent 1001"):
        store.add("1002", "Li", IFACE)
    store.add("1002", "Li", "PJSIP/agent1002")
    with pytest.raises(AgentExists):
        store.update("1002", interface=IFACE)
    with pytest.raises(AgentNotFound):
        store.update("1003", name="x")


def test_an_unreachable_database_is_a_clear_error(database_url, tmp_path):
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        with pytest.raises(AgentStoreUnavailable, match="agents' database"):
            AgentStore(make_session_factory(engine)).by_interface(IFACE)
    finally:
        engine.dispose()


def test_pause_reasons_for_the_phone_and_the_web():
    assert [(r.digit, r.key) for r in PAUSE_REASONS] == [
        ("1", "break"), ("2", "lunch"), ("3", "training"), ("4", "meeting"), ("5", "after-call-work")]
    assert all(r.label("zh-CN") and r.label("en") and r.label("zh-CN") != r.label("en") for r in PAUSE_REASONS)
    assert pause_reason_by_digit("2").key == "lunch"
    for bad in ("0", "6", "", "12", None):
        with pytest.raises(InvalidPauseReason):
            pause_reason_by_digit(bad)
    assert pause_reason_text("lunch") == "lunch"
    assert pause_reason_text("  doctor's\tappointment | back 3pm\n") == "doctor's appointment / back 3pm"
    assert known_pause_reason("Auto-Pause") is AUTO_PAUSE and known_pause_reason("doctor") is None
    for bad in ("", "   ", "\x00\x07", "x" * 65, 3):
        with pytest.raises(InvalidPauseReason):
            pause_reason_text(bad)


def test_the_migration_builds_the_agents_tables(database_url):
    migrate.upgrade(database_url, "0004")
    assert migrate.current(database_url) == "0004"
    engine = make_engine(database_url)
    try:
        assert {"agents", "agent_queues"} <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True,
                "include_object": lambda obj, name, kind, reflected, compare_to: (
                    kind != "table" or name in {"agents", "agent_queues"})})
            assert compare_metadata(context, Base.metadata) == []
        AgentStore(make_session_factory(engine)).add("1001", "Wang", IFACE, queues={"hotline-zh": 1})
    finally:
        engine.dispose()
    migrate.downgrade(database_url, "0003")
    engine = make_engine(database_url)
    try:
        assert not {"agents", "agent_queues"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- presence: the state machine --------------------------------------------------------------------------


def test_an_agent_nobody_has_seen_is_logged_out(presence):
    state = presence.state("1001", now=T0)
    assert (state.state, state.queues, state.paused, state.call) == (AgentStatus.logged_out, (), False, None)
    assert presence.all_states(now=T0) == []


def test_login_ring_answer_wrap_up_and_back_to_available(presence):
    presence.apply(add("hotline-zh", at=T0))
    presence.apply(add("traffic-zh", at=T0 + 0.01, penalty=2))
    s = presence.state("1001", now=T0 + 1)
    assert (s.state, s.since, s.queues, s.interface) == (AgentStatus.available, T0, ("hotline-zh", "traffic-zh"), IFACE)

    presence.apply(ev.AgentRang(T0 + 10, "traffic-zh", "c1", "1001", IFACE))
    for queue in ("hotline-zh", "traffic-zh"):  # Asterisk repeats the device's status for each queue
        presence.apply(status(queue, "1001", 6, T0 + 10.1))
    assert (presence.state("1001", now=T0 + 11).state, presence.state("1001", now=T0 + 11).since) == (
        AgentStatus.ringing, T0 + 10)

    presence.apply(ev.CallAnswered(T0 + 12, "traffic-zh", "c1", "1001", 7, 2, IFACE, "2026120800001"))
    for queue in ("hotline-zh", "traffic-zh"):
        presence.apply(status(queue, "1001", 2, T0 + 12.1, in_call=queue == "traffic-zh"))
    s = presence.state("1001", now=T0 + 30)
    assert (s.state, s.since) == (AgentStatus.on_call, T0 + 12)
    assert (s.call.call_id, s.call.ticket, s.call.queue, s.call.since) == ("c1", "2026120800001", "traffic-zh", T0 + 12)

    presence.apply(ev.CallCompleted(T0 + 100, "traffic-zh", "c1", "1001", 7, 88, "agent", IFACE, "2026120800001"))
    for queue in ("hotline-zh", "traffic-zh"):
        presence.apply(status(queue, "1001", 1, T0 + 100.1))
    s = presence.state("1001", now=T0 + 110)
    assert (s.state, s.since, s.wrap_up_until, s.call) == (AgentStatus.wrap_up, T0 + 100, T0 + 120, None)
    # Wrap-up ends by the clock alone, read from the call's end; no event is needed.
    s = presence.state("1001", now=T0 + 121)
    assert (s.state, s.since, s.wrap_up_until) == (AgentStatus.available, T0 + 120, None)
    presence.apply(status("hotline-zh", "1001", 1, T0 + 200))  # and later events keep that answer
    assert presence.state("1001", now=T0 + 201).since == T0 + 120


def test_without_wrap_up_time_an_agent_is_available_when_the_call_ends(redis_conn, redis_prefix):
    presence = AgentPresence(redis_conn, prefix=redis_prefix)
    presence.apply(add(at=T0))
    presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c1", "1001", 1))
    presence.apply(ev.CallCompleted(T0 + 9, "hotline-zh", "c1", "1001", 1, 8))
    assert (presence.state("1001", now=T0 + 9).state, presence.state("1001", now=T0 + 9).since) == (
        AgentStatus.available, T0 + 9)


def test_ring_no_answer_goes_back_to_available_or_to_auto_pause(presence):
    presence.apply(add(at=T0))
    presence.apply(ev.AgentRang(T0 + 1, "hotline-zh", "c1", "1001"))
    presence.apply(status("hotline-zh", "1001", 6, T0 + 1.1))
    presence.apply(ev.AgentMissed(T0 + 16, "hotline-zh", "c1", "1001", 15))
    assert presence.state("1001", now=T0 + 16).state is AgentStatus.available
    # queues.conf autopause: Asterisk pauses the agent itself; its event is what counts.
    presence.apply(ev.MemberPaused(T0 + 16.1, "hotline-zh", "1001", True, "Auto-Pause", IFACE))
    presence.apply(status("hotline-zh", "1001", 1, T0 + 16.2, paused=True, reason="Auto-Pause"))
    s = presence.state("1001", now=T0 + 76)
    assert (s.state, s.reason, s.paused_since, s.since) == (AgentStatus.paused, "Auto-Pause", T0 + 16.1, T0 + 16.1)


def test_a_ring_that_stops_without_an_answer_event_ends_with_the_phones_status(presence):
    """The caller hung up while the phone rang (queue_log RINGCANCELED has no AMI event of its own)."""
    presence.apply(add(at=T0))
    presence.apply(ev.AgentRang(T0 + 1, "hotline-zh", "c1", "1001"))
    presence.apply(status("hotline-zh", "1001", 1, T0 + 1.05))  # a status from before the ringing: no news
    assert presence.state("1001", now=T0 + 2).state is AgentStatus.ringing
    presence.apply(status("hotline-zh", "1001", 6, T0 + 1.1))
    presence.apply(status("hotline-zh", "1001", 1, T0 + 5))
    assert (presence.state("1001", now=T0 + 6).state, presence.state("1001", now=T0 + 6).since) == (
        AgentStatus.available, T0 + 5)


def test_pause_in_all_queues_with_reason_and_time_in_pause(presence):
    for i, queue in enumerate(("hotline-zh", "urgent-zh")):
        presence.apply(add(queue, at=T0 + i))
    presence.apply(ev.MemberPaused(T0 + 60, "hotline-zh", "1001", True, "lunch"))
    assert presence.state("1001", now=T0 + 61).state is AgentStatus.available  # urgent-zh still rings it
    assert presence.queue_counts("hotline-zh", now=T0 + 61).paused == 1
    presence.apply(ev.MemberPaused(T0 + 60.2, "urgent-zh", "1001", True, "lunch"))
    s = presence.state("1001", now=T0 + 600)
    assert (s.state, s.paused, s.reason, s.paused_since, s.since) == (AgentStatus.paused, True, "lunch", T0 + 60.2,
                                                                      T0 + 60.2)
    counts = presence.queue_counts(now=T0 + 660.2)
    assert (counts.logged_in, counts.paused, counts.available) == (1, 1, 0)
    assert [(p.code, p.reason, p.seconds) for p in counts.paused_agents] == [("1001", "lunch", 600)]
    presence.apply(ev.MemberPaused(T0 + 700, "urgent-zh", "1001", False))
    s = presence.state("1001", now=T0 + 701)
    assert (s.state, s.paused, s.reason, s.since) == (AgentStatus.available, False, "", T0 + 700)


def test_a_call_taken_while_paused_and_the_pause_after_it(presence):
    presence.apply(add(at=T0))
    presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c1", "1001", 1))
    presence.apply(ev.MemberPaused(T0 + 5, "hotline-zh", "1001", True, "after-call-work"))
    s = presence.state("1001", now=T0 + 6)
    assert (s.state, s.paused, s.reason) == (AgentStatus.on_call, True, "after-call-work")
    presence.apply(ev.CallCompleted(T0 + 9, "hotline-zh", "c1", "1001", 1, 8))
    assert presence.state("1001", now=T0 + 10).state is AgentStatus.paused  # a pause outranks wrap-up


def test_logout_keeps_the_pause_for_the_next_login(presence):
    presence.apply(add("hotline-zh", at=T0))
    presence.apply(add("urgent-zh", at=T0))
    for queue in ("hotline-zh", "urgent-zh"):
        presence.apply(ev.MemberPaused(T0 + 10, queue, "1001", True, "training"))
        presence.apply(ev.MemberRemoved(T0 + 20, queue, IFACE))  # the removal names the phone, not the code
    s = presence.state("1001", now=T0 + 30)
    assert (s.state, s.queues, s.paused, s.reason) == (AgentStatus.logged_out, (), True, "training")
    presence.apply(add("hotline-zh", at=T0 + 100, paused=True, reason="training"))
    s = presence.state("1001", now=T0 + 101)
    assert (s.state, s.reason, s.paused_since) == (AgentStatus.paused, "training", T0 + 100)
    presence.apply(ev.MemberPaused(T0 + 200, "hotline-zh", "1001", False))
    presence.apply(ev.MemberRemoved(T0 + 300, "hotline-zh", IFACE))
    assert presence.state("1001", now=T0 + 301).paused is False


def test_a_snapshot_replaces_what_is_known_of_its_queue(presence):
    presence.apply(add("hotline-zh", "1001", at=T0))
    presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c1", "1001", 1))  # its end is lost with the link
    presence.apply(add("hotline-zh", "1002", at=T0))
    presence.apply(add("hotline-zh", "1003", at=T0))
    presence.apply(add("urgent-zh", "1003", at=T0))
    snapshot = ev.QueueSnapshot(T0 + 50, "hotline-zh", members=(
        status("hotline-zh", "1001", 1, T0 + 50),
        status("hotline-zh", "1002", 1, T0 + 50, paused=True, reason="meeting"),
        status("hotline-zh", "1004", 2, T0 + 50, in_call=True),  # logged in while the link was down
    ))
    presence.apply(snapshot)
    states = {s.code: s for s in presence.all_states(now=T0 + 51)}
    assert (states["1001"].state, states["1001"].call) == (AgentStatus.available, None)
    assert (states["1002"].state, states["1002"].reason) == (AgentStatus.paused, "meeting")
    assert (states["1003"].state, states["1003"].queues) == (AgentStatus.available, ("urgent-zh",))
    assert (states["1004"].state, states["1004"].interface) == (AgentStatus.on_call, "PJSIP/agent1004")
    counts = presence.queue_counts("hotline-zh", now=T0 + 51)
    assert (counts.logged_in, counts.available, counts.paused, counts.on_call) == (3, 1, 1, 1)
    presence.apply(ev.QueueSnapshot(T0 + 60, "urgent-zh"))  # an empty queue: its members are gone
    assert presence.state("1003", now=T0 + 61).state is AgentStatus.logged_out


def test_interface_only_events_find_the_agent_by_its_phone(presence):
    presence.apply(add(at=T0))
    presence.apply(ev.MemberStatus(T0 + 1, "hotline-zh", IFACE, "", 5))
    s = presence.state("1001", now=T0 + 2)
    assert (s.state, s.reachable) == (AgentStatus.available, False)
    assert presence.queue_counts(now=T0 + 2).unreachable == 1
    assert [x.code for x in presence.all_states(now=T0 + 2)] == ["1001"]


@pytest.mark.parametrize("surprise", [
    ev.CallCompleted(T0, "hotline-zh", "c9", "9999", 1, 1),
    ev.AgentMissed(T0, "hotline-zh", "c9", "9999", 15),
    ev.MemberRemoved(T0, "hotline-zh", "PJSIP/agent9999"),
    ev.MemberRemoved(T0, "hotline-zh", "", ""),
    ev.MemberPaused(T0, "hotline-zh", "", True),
    ev.CallerJoined(T0, "hotline-zh", "c9"),
    ev.OriginateResult(T0, "o1", True),
    "not an event",
])
def test_surprises_do_not_crash_or_log_anyone_in(presence, surprise):
    presence.apply(surprise)
    assert not any(s.logged_in for s in presence.all_states(now=T0 + 1))
    assert presence.queue_counts(now=T0 + 1).logged_in == 0


def test_late_or_foreign_call_events_do_not_undo_newer_ones(presence):
    presence.apply(add(at=T0))
    presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c2", "1001", 1))
    presence.apply(ev.CallCompleted(T0 + 2, "hotline-zh", "c1", "1001", 1, 1))  # not the call it is on
    presence.apply(ev.AgentMissed(T0 + 2, "hotline-zh", "c1", "1001", 15))
    assert presence.state("1001", now=T0 + 3).call.call_id == "c2"
    presence.apply(ev.CallCompleted(T0 + 9, "hotline-zh", "c2", "1001", 1, 8))
    presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c2", "1001", 1))  # arrives after its end
    presence.apply(ev.AgentRang(T0 + 0.5, "hotline-zh", "c2", "1001"))
    assert presence.state("1001", now=T0 + 10).state is AgentStatus.wrap_up


def test_queue_counts_add_up(presence):
    presence.apply(add("hotline-zh", "1001", at=T0))
    presence.apply(add("hotline-zh", "1002", at=T0))
    presence.apply(add("urgent-zh", "1002", at=T0))
    presence.apply(add("hotline-zh", "1003", at=T0))
    presence.apply(add("hotline-en", "1004", at=T0))
    presence.apply(ev.AgentRang(T0 + 1, "hotline-zh", "c1", "1001"))
    presence.apply(ev.CallAnswered(T0 + 1, "urgent-zh", "c2", "1002", 1))
    presence.apply(ev.MemberPaused(T0 + 2, "hotline-zh", "1003", True, "break"))
    everyone = presence.queue_counts(now=T0 + 5)
    assert (everyone.queue, everyone.logged_in, everyone.available, everyone.ringing, everyone.on_call,
            everyone.wrap_up, everyone.paused) == (None, 4, 1, 1, 1, 0, 1)
    zh = presence.queue_counts("hotline-zh", now=T0 + 5)
    assert (zh.logged_in, zh.available, zh.ringing, zh.on_call, zh.paused) == (3, 0, 1, 1, 1)
    assert [(p.code, p.reason, p.seconds) for p in zh.paused_agents] == [("1003", "break", 3)]
    assert presence.queue_counts("traffic-zh", now=T0 + 5).logged_in == 0


# -- presence: what the screens are told ------------------------------------------------------------------


def _messages(pubsub, wanted: int, timeout: float = 2.0) -> list[tuple[str, dict]]:
    out = []
    for _ in range(200):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout / 20)
        if message:
            out.append((message["channel"].decode(), json.loads(message["data"])))
        if len(out) >= wanted:
            break
    return out


def test_each_visible_change_is_published_for_the_agent_and_the_wallboard(presence, redis_conn, redis_prefix):
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(f"{redis_prefix}agent:1001", f"{redis_prefix}agents")
    pubsub.get_message(timeout=1)
    pubsub.get_message(timeout=1)
    try:
        presence.apply(add(at=T0))
        presence.apply(add("urgent-zh", at=T0 + 0.1))  # a second queue: nothing the screens show changed
        presence.apply(status("hotline-zh", "1001", 1, T0 + 0.2))
        presence.apply(ev.CallAnswered(T0 + 1, "hotline-zh", "c1", "1001", 3, 1, IFACE, "2026120800007"))
        presence.apply(ev.CallCompleted(T0 + 9, "hotline-zh", "c1", "1001", 3, 8, "caller", IFACE, "2026120800007"))
        got = _messages(pubsub, 6)
    finally:
        pubsub.close()
    mine = [m for channel, m in got if channel == f"{redis_prefix}agent:1001"]
    board = [m for channel, m in got if channel == f"{redis_prefix}agents"]
    assert mine == board and len(mine) == 3
    assert mine[0] == {"code": "1001", "state": "available", "since": T0, "reason": "", "call_id": "",
                       "ticket": "", "queue": ""}
    assert mine[1] == {"code": "1001", "state": "on_call", "since": T0 + 1, "reason": "", "call_id": "c1",
                       "ticket": "2026120800007", "queue": "hotline-zh"}
    assert mine[2] == {"code": "1001", "state": "wrap_up", "since": T0 + 9, "reason": "", "call_id": "",
                       "ticket": "", "queue": "", "until": T0 + 29}


def test_a_pause_is_published_with_its_reason(presence, redis_conn, redis_prefix):
    presence.apply(add(at=T0))
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(f"{redis_prefix}agent:1001")
    pubsub.get_message(timeout=1)
    try:
        presence.apply(ev.MemberPaused(T0 + 5, "hotline-zh", "1001", True, "lunch"))
        got = _messages(pubsub, 1)
    finally:
        pubsub.close()
    assert [m for _, m in got] == [{"code": "1001", "state": "paused", "since": T0 + 5, "reason": "lunch",
                                    "call_id": "", "ticket": "", "queue": ""}]


# -- presence: any order of events keeps the figures consistent ------------------------------------------

CODES = ("1001", "1002", "1003")
QUEUES = ("hotline-zh", "urgent-zh")
CALLS = ("c1", "c2", "c3")

_code, _queue, _call = st.sampled_from(CODES), st.sampled_from(QUEUES), st.sampled_from(CALLS)
_member_status = st.builds(lambda q, c, d, p, i: status(q, c, d, 0, paused=p, reason="break" if p else "", in_call=i),
                           _queue, _code, st.sampled_from([0, 1, 2, 5, 6, 8]), st.booleans(), st.booleans())
_EVENT = st.one_of(
    st.builds(lambda q, c, p: add(q, c, 0, paused=p, reason="lunch" if p else ""), _queue, _code, st.booleans()),
    st.builds(lambda q, c: ev.MemberRemoved(0, q, f"PJSIP/agent{c}", c), _queue, _code),
    st.builds(lambda q, c, p: ev.MemberPaused(0, q, c, p, "meeting" if p else ""), _queue, _code, st.booleans()),
    _member_status,
    st.builds(lambda q, c, a: ev.AgentRang(0, q, c, a), _queue, _call, _code),
    st.builds(lambda q, c, a: ev.AgentMissed(0, q, c, a, 15), _queue, _call, _code),
    st.builds(lambda q, c, a: ev.CallAnswered(0, q, c, a, 1, ticket="2026120800001"), _queue, _call, _code),
    st.builds(lambda q, c, a: ev.CallCompleted(0, q, c, a, 1, 5), _queue, _call, _code),
    st.builds(lambda q, members: ev.QueueSnapshot(0, q, tuple(m for m in members if m.queue == q)),
              _queue, st.lists(_member_status, max_size=3, unique_by=lambda m: m.agent)),
)


def _stamped(event, at):
    """The event at time ``at`` (snapshot members too)."""
    if isinstance(event, ev.QueueSnapshot):
        return dataclasses.replace(event, at=at, members=tuple(dataclasses.replace(m, at=at) for m in event.members))
    return dataclasses.replace(event, at=at)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(_EVENT, st.floats(0, 30)), max_size=30), wrap_up=st.sampled_from([0, 20]))
def test_random_event_sequences_never_crash_and_keep_the_counts_consistent(redis_conn, events, wrap_up):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    presence = AgentPresence(redis_conn, prefix=prefix, wrap_up_seconds=wrap_up)
    membership = {code: set() for code in CODES}  # what Asterisk's events say each agent is a member of
    at = T0
    try:
        for event, gap in events:
            at += gap
            event = _stamped(event, at)
            presence.apply(event)
            if isinstance(event, (ev.MemberAdded, ev.MemberPaused, ev.MemberStatus)):
                membership[event.agent].add(event.queue)
            elif isinstance(event, ev.MemberRemoved):
                membership[event.agent].discard(event.queue)
            elif isinstance(event, ev.QueueSnapshot):
                for code in CODES:
                    membership[code].discard(event.queue)
                for member in event.members:
                    membership[member.agent].add(event.queue)
            for now in (at, at + 10, at + 25):
                states = {s.code: s for s in presence.all_states(now=now)}
                for code in CODES:
                    queues = set(states[code].queues) if code in states else set()
                    assert queues == membership[code]
                for queue in (None, *QUEUES):
                    counts = presence.queue_counts(queue, now=now)
                    assert counts.available + counts.ringing + counts.on_call + counts.wrap_up + counts.paused == (
                        counts.logged_in)
                    members = [s for s in states.values() if s.logged_in and (queue is None or queue in s.queues)]
                    assert counts.logged_in == len(members)
                    assert counts.paused == len(counts.paused_agents)
                    assert all(p.seconds >= 0 for p in counts.paused_agents)
                for s in states.values():
                    assert s.logged_in == bool(s.queues)
                    assert (s.state is AgentStatus.paused) <= s.paused
                    assert s.since is None or s.since <= now
    finally:
        for key in redis_conn.scan_iter(prefix + "*"):
            redis_conn.delete(key)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(_EVENT, st.floats(0, 30)), max_size=30), cuts=st.lists(st.integers(0, 30)),
       wrap_up=st.sampled_from([0, 20]))
def test_a_batch_leaves_the_same_states_and_messages_as_its_events_one_by_one(redis_conn, events, cuts, wrap_up):
    prefixes = [f"test:{uuid.uuid4().hex[:10]}:" for _ in range(2)]
    one, batched = (AgentPresence(redis_conn, prefix=p, wrap_up_seconds=wrap_up) for p in prefixes)
    pubsub = redis_conn.pubsub()
    pubsub.psubscribe(*(p + "agent:*" for p in prefixes))
    for _ in prefixes:  # the subscriptions are confirmed before anything is published
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
    stamped, at = [], T0
    for event, gap in events:
        at += gap
        stamped.append(_stamped(event, at))
    try:
        for event in stamped:
            one.apply(event)
        bounds = sorted({0, len(stamped), *(c for c in cuts if c <= len(stamped))})
        for start, end in zip(bounds, bounds[1:]):
            batched.apply_many(stamped[start:end])
        for now in (at, at + 25):
            assert ([dataclasses.astuple(s) for s in one.all_states(now=now)]
                    == [dataclasses.astuple(s) for s in batched.all_states(now=now)])
        got = {p: [] for p in prefixes}
        while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
            channel = message["channel"].decode()
            prefix = next(p for p in prefixes if channel.startswith(p))
            got[prefix].append((channel[len(prefix):], json.loads(message["data"])))
        assert got[prefixes[0]] == got[prefixes[1]]  # every change, in order: the screen pop misses none
        assert len(got[prefixes[0]]) >= sum(isinstance(e, ev.CallAnswered) for e in stamped) > 0 or not any(
            isinstance(e, ev.CallAnswered) for e in stamped)
    finally:
        pubsub.close()
        for prefix in prefixes:
            for key in redis_conn.scan_iter(prefix + "*"):
                redis_conn.delete(key)


# -- the desk ----------------------------------------------------------------------------------------


class RecordingControl:
    """A QueueControl that records what it is asked; ``refuse`` maps a queue (or "*") to an error."""

    def __init__(self, refuse=None):
        self.calls = []
        self.refuse = refuse or {}

    def _maybe_refuse(self, queue):
        error = self.refuse.get(queue) or self.refuse.get("*")
        if error is not None:
            raise error

    def add_member(self, queue, interface, member_name, *, penalty=0, paused=False, reason="", state_interface=""):
        self.calls.append(("add", queue, interface, member_name, penalty, paused, reason, state_interface))
        self._maybe_refuse(queue)

    def remove_member(self, queue, interface):
        self.calls.append(("remove", queue, interface))
        self._maybe_refuse(queue)

    def pause_member(self, interface, paused, *, reason="", queue=""):
        self.calls.append(("pause", interface, paused, reason, queue))
        self._maybe_refuse(queue)

    def set_penalty(self, interface, penalty, *, queue=""):
        raise AssertionError("not used by the desk")

    originate = set_penalty


@pytest.fixture
def desk_world(store, presence):
    store.add("1001", "Wang", IFACE, queues={"hotline-zh": 0, "urgent-zh": 2})
    control = RecordingControl()
    return AgentDesk(store, presence, control), control


def test_login_adds_the_phone_to_each_queue_with_its_penalty(desk_world, presence):
    desk, control = desk_world
    request = desk.login("1001")
    assert request == DeskRequest("login", "1001", IFACE, ("hotline-zh", "urgent-zh"), False, "")
    assert control.calls == [("add", "hotline-zh", IFACE, "1001", 0, False, "", IFACE),
                             ("add", "urgent-zh", IFACE, "1001", 2, False, "", IFACE)]
    # Asked, not done: the state moves when Asterisk's events come.
    assert presence.state("1001").state is AgentStatus.logged_out


def test_a_relogin_keeps_the_pause_and_its_reason(desk_world, presence):
    desk, control = desk_world
    presence.apply(add("hotline-zh", at=T0))
    presence.apply(ev.MemberPaused(T0 + 1, "hotline-zh", "1001", True, "lunch"))
    presence.apply(ev.MemberRemoved(T0 + 2, "hotline-zh", IFACE, "1001"))
    request = desk.login("1001")
    assert (request.paused, request.reason) == (True, "lunch")
    assert {(c[1], c[5], c[6]) for c in control.calls} == {("hotline-zh", True, "lunch"), ("urgent-zh", True, "lunch")}


def test_logout_removes_the_phone_from_every_queue_asterisk_or_the_store_has(desk_world, presence, store):
    desk, control = desk_world
    presence.apply(add("hotline-zh", at=T0))
    presence.apply(add("traffic-zh", at=T0))  # put there by hand, not configured
    store.update("1001", active=False)  # a deactivated agent can still be logged out
    request = desk.logout("1001")
    assert request.queues == ("hotline-zh", "traffic-zh", "urgent-zh")
    assert sorted(control.calls) == [("remove", q, IFACE) for q in ("hotline-zh", "traffic-zh", "urgent-zh")]


def test_pause_and_unpause_ask_for_all_queues_at_once(desk_world):
    desk, control = desk_world
    assert desk.pause("1001", "lunch") == DeskRequest("pause", "1001", IFACE, (), True, "lunch")
    assert desk.pause("1001", " seeing\nthe doctor ").reason == "seeing the doctor"
    assert desk.unpause("1001") == DeskRequest("unpause", "1001", IFACE)
    assert control.calls == [("pause", IFACE, True, "lunch", ""), ("pause", IFACE, True, "seeing the doctor", ""),
                             ("pause", IFACE, False, "", "")]
    with pytest.raises(InvalidPauseReason):
        desk.pause("1001", "")
    assert len(control.calls) == 3


def test_unknown_inactive_and_queueless_agents_are_refused(desk_world, store):
    desk, control = desk_world
    with pytest.raises(AgentNotFound):
        desk.login("9999")
    with pytest.raises(AgentNotFound):
        desk.logout("9999")
    store.add("1002", "Li", "PJSIP/agent1002")
    with pytest.raises(InvalidAgent, match="serves no queue"):
        desk.login("1002")
    store.update("1001", active=False)
    for action in (desk.login, desk.unpause, lambda code: desk.pause(code, "break")):
        with pytest.raises(AgentInactive, match="deactivated"):
            action("1001")
    assert control.calls == []


def test_asterisk_out_of_reach_or_refusing_passes_up_with_a_clear_message(store, presence):
    store.add("1001", "Wang", IFACE, queues={"hotline-zh": 0, "urgent-zh": 0})
    with pytest.raises(QueueControlUnavailable, match="agent 1001 cannot be logged in.*no AMI link"):
        AgentDesk(store, presence, NoQueueControl()).login("1001")
    down = RecordingControl({"*": QueueControlUnavailable("no answer within 5 s")})
    with pytest.raises(QueueControlUnavailable, match="agent 1001 cannot be paused: Asterisk cannot be asked"):
        AgentDesk(store, presence, down).pause("1001", "break")
    with pytest.raises(QueueControlUnavailable):
        AgentDesk(store, presence, down).login("1001")
    assert len([c for c in down.calls if c[0] == "add"]) == 1  # the link is down: no point asking again
    picky = RecordingControl({"hotline-zh": QueueControlError("No such queue")})
    with pytest.raises(QueueControlError, match="hotline-zh: Asterisk refused .No such queue."):
        AgentDesk(store, presence, picky).login("1001")
    assert [c[1] for c in picky.calls] == ["hotline-zh", "urgent-zh"]  # the other queue was still asked


def test_login_goes_on_when_presence_cannot_be_read(store, redis_down):
    store.add("1001", "Wang", IFACE, queues={"hotline-zh": 0})
    control = RecordingControl()
    request = AgentDesk(store, AgentPresence(redis_down, prefix="x:"), control).login("1001")
    assert request.paused is False and len(control.calls) == 1
