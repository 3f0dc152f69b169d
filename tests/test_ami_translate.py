"""AMI events to queue events, on the messages a real Asterisk 20.20.1 sent (shared/fixtures) and on bad input."""

from __future__ import annotations

import itertools

import pytest

import ami.translate
from ami.link import AmiEvent, AmiResponse, parse_message
from ami.translate import LEAVE_GRACE, EventTranslator, snapshots_from_status
from queues.events import (
    AgentMissed,
    AgentRang,
    CallAnswered,
    CallBackDialled,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
    MemberStatus,
    OriginateResult,
    QueueSnapshot,
)
from tests.ami_peer import fixture_messages, message

NOW = 1_800_000_000.0


def replay(name: str, translator: EventTranslator | None = None):
    """Every received message of a fixture through the parser; the events through the translator."""
    translator = translator or EventTranslator(clock=lambda: NOW)
    parsed = [parse_message(text) for text in fixture_messages(name)]
    assert all(m is not None for m in parsed)
    events = [m for m in parsed if isinstance(m, AmiEvent)]
    return parsed, events, [out for e in events for out in translator.translate(e)]


def of(kind, produced):
    return [e for e in produced if isinstance(e, kind)]


def ev(name: str, *pairs: tuple[str, str]) -> AmiEvent:
    event = parse_message(message([("Event", name), *pairs]))
    assert isinstance(event, AmiEvent)
    return event


def test_the_recorded_support_queue_session():
    parsed, events, out = replay("ami-queue-events.txt")
    assert len(events) == 291 and sum(isinstance(m, AmiResponse) for m in parsed) == 21 == len(parsed) - 291

    joins = of(CallerJoined, out)
    assert [(j.call_id, j.caller, j.ticket, j.position, j.queue) for j in joins] == [
        ("1795846271.0", "5551234567", "HL-20261128-0001", 1, "support"),
        ("1795846287.2", "5557654321", "HL-20261128-0002", 1, "support"),
        ("1795846294.4", "5550001111", "HL-20261128-0003", 1, "support"),
        ("1795846308.8", "5550100", "HL-20261128-0004", 1, "support"),
        ("1795846319.11", "5550101", "HL-20261128-0005", 1, "support")]
    assert all(j.at == NOW for j in joins)

    assert [(r.call_id, r.agent, r.interface) for r in of(AgentRang, out)] == [
        ("1795846271.0", "Agent Two", "SIP/agent2"), ("1795846287.2", "Agent Two", "SIP/agent2"),
        ("1795846294.4", "Agent Two", "SIP/agent2"), ("1795846294.4", "Agent Two", "SIP/agent2"),
        ("1795846308.8", "Agent Two", "SIP/agent2"), ("1795846319.11", "Agent Two", "SIP/agent2")]
    assert of(AgentMissed, out) == [AgentMissed(at=NOW, queue="support", call_id="1795846294.4", agent="Agent Two",
                                                ring_seconds=6.0, interface="SIP/agent2")]

    assert [(a.call_id, a.hold_seconds, a.ring_seconds, a.agent, a.ticket) for a in of(CallAnswered, out)] == [
        ("1795846271.0", 3.0, 2.0, "Agent Two", "HL-20261128-0001"),
        ("1795846308.8", 3.0, 2.0, "Agent Two", "HL-20261128-0004"),
        ("1795846319.11", 3.0, 2.0, "Agent Two", "HL-20261128-0005")]
    assert [(c.call_id, c.hold_seconds, c.talk_seconds, c.ended_by, c.ticket) for c in of(CallCompleted, out)] == [
        ("1795846271.0", 3.0, 7.0, "caller", "HL-20261128-0001"),
        ("1795846308.8", 3.0, 4.0, "agent", "HL-20261128-0004"),  # the agent's SIP BYE
        ("1795846319.11", 3.0, 4.0, "caller", "HL-20261128-0005")]  # AMI Hangup of the agent: "caller"
    assert of(CallerAbandoned, out) == [
        CallerAbandoned(at=NOW, queue="support", call_id="1795846287.2", wait_seconds=3.0, position=1,
                        original_position=1, caller="5557654321", ticket="HL-20261128-0002"),
        CallerAbandoned(at=NOW, queue="support", call_id="1795846294.4", wait_seconds=11.0, position=1,
                        original_position=1, caller="5550001111", ticket="HL-20261128-0003")]
    assert of(CallerGaveUp, out) == []  # every QueueCallerLeave here was an answer or an abandon

    assert of(MemberAdded, out) == [MemberAdded(at=NOW, queue="support", interface="SIP/agent2", agent="Agent Two")]
    assert of(MemberPaused, out) == [
        MemberPaused(at=NOW, queue="support", agent="Agent Two", paused=True, reason="lunch break",
                     interface="SIP/agent2"),
        MemberPaused(at=NOW, queue="support", agent="Agent Two", paused=False, reason="", interface="SIP/agent2")]
    assert of(MemberRemoved, out) == [MemberRemoved(at=NOW, queue="support", interface="SIP/agent2",
                                                    agent="Agent Two")]
    statuses = of(MemberStatus, out)
    assert len(statuses) == 16  # 15 QueueMemberStatus and the QueueMemberPenalty
    assert statuses[0].penalty == 2 and [s.device for s in statuses[:3]] == [1, 6, 2]
    assert [(s.device, s.in_call) for s in statuses if s.in_call] == [(2, True)]

    assert of(OriginateResult, out) == [
        OriginateResult(at=NOW, originate_id="orig-1", answered=True, reason=4,
                        channel="Local/12345@incoming-00000000;1", call_id="1795846308.7"),
        OriginateResult(at=NOW, originate_id="orig-3", answered=True, reason=4,
                        channel="Local/12345@incoming-00000001;1", call_id="1795846319.10"),
        OriginateResult(at=NOW, originate_id="orig-2", answered=False, reason=0, channel="Local/99999@incoming")]
    assert len(out) == 43


def test_originate_response_chan_variable_form_is_read():
    _parsed, events, _out = replay("ami-queue-events.txt")
    originated = [e for e in events if e.name == "OriginateResponse"]
    assert originated[0].chan_vars == {"HOTLINE_TICKET": ""} and originated[0].action_id == "orig-1"
    calls = [e for e in events if e.name == "AgentCalled"]
    assert calls[0].chan_vars == {"HOTLINE_TICKET": "HL-20261128-0001"} and calls[0].dest_chan_vars == {
        "HOTLINE_TICKET": ""}


def test_the_unfiltered_session_means_the_same():
    """VarSet (QUEUEWAIT ...) on the caller between QueueCallerLeave and AgentConnect is not a giving up."""
    _parsed, events, raw = replay("ami-all-events-raw.txt")
    _parsed, _events, filtered = replay("ami-queue-events.txt")
    assert len(events) > 400 and raw == filtered


def test_the_recorded_pjsip_call():
    _parsed, events, out = replay("ami-queue-call-pjsip.txt")
    assert events[0].name == "FullyBooted" and events[0].get("AccountCode") == ""
    assert events[1].chan_vars == {"HOTLINE_TICKET": ""}  # before the backend set it
    assert [type(e).__name__ for e in out if not isinstance(e, MemberStatus)] == [
        "CallerJoined", "AgentRang", "CallAnswered", "CallCompleted"]
    joined, rang, answered, completed = [e for e in out if not isinstance(e, MemberStatus)]
    assert joined == CallerJoined(at=NOW, queue="traffic-zh", call_id="1795882339.23", caller="13920000008",
                                  position=1, ticket="2026112900013")
    assert (rang.agent, rang.interface) == ("Agent 1002", "PJSIP/agent1002")
    assert (answered.hold_seconds, answered.ring_seconds, answered.ticket) == (1.0, 0.0, "2026112900013")
    assert (completed.ended_by, completed.hold_seconds, completed.talk_seconds) == ("agent", 1.0, 4.0)
    statuses = of(MemberStatus, out)
    assert len(statuses) == 12
    assert {s.queue for s in statuses} == {"traffic-zh", "hotline-en", "hotline-zh", "urgent-zh"}
    assert [s.device for s in statuses[::4]] == [6, 2, 1]


# -- giving up, timestamps -----------------------------------------------------------------------------------

def _caller(uid: str, *more: tuple[str, str]):
    return [("Channel", "PJSIP/carrier1-00000001"), ("CallerIDNum", "13920000008"), ("Uniqueid", uid),
            ("ChanVariable", "HOTLINE_TICKET=2026112900013"), *more]


def clock_of(*times):
    values = iter(times)
    return lambda: next(values)


def test_a_caller_who_leaves_unanswered_gave_up_when_the_channel_moves_on():
    tr = EventTranslator(clock=clock_of(100.0, 110.0, 130.0, 131.0))
    tr.translate(ev("QueueCallerJoin", *_caller("9.1", ("Queue", "traffic-zh"), ("Position", "1"))))
    tr.translate(ev("AgentRingNoAnswer", *_caller("9.1", ("Queue", "traffic-zh"), ("MemberName", "A"),
                                                  ("RingTime", "15000"))))
    assert tr.translate(ev("QueueCallerLeave", *_caller("9.1", ("Queue", "traffic-zh")))) == []
    assert tr.translate(ev("Hangup", *_caller("9.1"))) == [
        CallerGaveUp(at=130.0, queue="traffic-zh", call_id="9.1", wait_seconds=30.0, why="timeout",
                     caller="13920000008", ticket="2026112900013")]


def test_an_overflow_to_the_general_queue_is_a_giving_up_then_a_join():
    tr = EventTranslator(clock=clock_of(100.0, 160.0, 160.5))
    tr.translate(ev("QueueCallerJoin", *_caller("9.2", ("Queue", "traffic-zh"))))
    tr.translate(ev("QueueCallerLeave", *_caller("9.2", ("Queue", "traffic-zh"))))
    gave_up, joined = tr.translate(ev("QueueCallerJoin", *_caller("9.2", ("Queue", "hotline-zh"))))
    assert (gave_up.queue, gave_up.wait_seconds, joined.queue, joined.at) == ("traffic-zh", 60.0, "hotline-zh", 160.5)


def test_queuestatus_says_why_and_a_long_silence_settles_a_leave():
    tr = EventTranslator(clock=clock_of(100.0, 105.0, 106.0, 200.0, 201.0, 201.0 + LEAVE_GRACE))
    tr.translate(ev("QueueCallerJoin", *_caller("9.3", ("Queue", "q"))))
    tr.translate(ev("QueueCallerLeave", *_caller("9.3", ("Queue", "q"))))
    [empty] = tr.translate(ev("VarSet", *_caller("9.3", ("Variable", "QUEUESTATUS"), ("Value", "LEAVEEMPTY"))))
    assert (empty.why, empty.wait_seconds) == ("empty", 5.0)
    tr.translate(ev("QueueCallerJoin", *_caller("9.4", ("Queue", "q"))))
    tr.translate(ev("QueueCallerLeave", *_caller("9.4", ("Queue", "q"))))
    late, status = tr.translate(ev("QueueMemberStatus", ("Queue", "q"), ("Status", "1")))
    assert (late.call_id, late.at, late.why, status.at) == ("9.4", 201.0, "timeout", 201.0 + LEAVE_GRACE)


def test_answered_and_abandoned_callers_never_gave_up():
    tr = EventTranslator(clock=itertools.count(100.0).__next__)
    out = []
    for uid in ("9.5", "9.6"):
        out += tr.translate(ev("QueueCallerJoin", *_caller(uid, ("Queue", "q"))))
    out += tr.translate(ev("QueueCallerLeave", *_caller("9.5", ("Queue", "q"))))
    out += tr.translate(ev("VarSet", *_caller("9.5", ("Variable", "QUEUEWAIT"), ("Value", "3"))))
    out += tr.translate(ev("AgentConnect", *_caller("9.5", ("Queue", "q"), ("MemberName", "A"), ("HoldTime", "3"),
                                                    ("RingTime", "1"))))
    out += tr.translate(ev("QueueCallerAbandon", *_caller("9.6", ("Queue", "q"), ("HoldTime", "4"))))
    out += tr.translate(ev("QueueCallerLeave", *_caller("9.6", ("Queue", "q"))))
    for uid in ("9.5", "9.6"):
        out += tr.translate(ev("Hangup", *_caller(uid)))
    out += tr.translate(ev("QueueMemberStatus", ("Queue", "q"), ("Status", "1"), ("Timestamp", "9999.5")))
    assert [type(e).__name__ for e in out] == ["CallerJoined", "CallerJoined", "CallAnswered", "CallerAbandoned",
                                               "MemberStatus"]


def test_a_timestamp_header_wins_over_the_clock():
    tr = EventTranslator(clock=lambda: NOW)
    [stamped] = tr.translate(ev("QueueMemberPause", ("Queue", "q"), ("MemberName", "A"), ("Paused", "1"),
                                ("PausedReason", "lunch break"), ("Timestamp", "1795846280.123456")))
    assert stamped.at == 1795846280.123456 and stamped.reason == "lunch break"
    [unstamped] = tr.translate(ev("QueueMemberPause", ("Queue", "q"), ("Paused", "0"), ("Timestamp", "soon")))
    assert unstamped.at == NOW and not unstamped.paused


def test_state_per_call_is_bounded(monkeypatch):
    monkeypatch.setattr(ami.translate, "MAX_CALLS", 50)
    tr = EventTranslator(clock=lambda: NOW)
    for n in range(500):
        tr.translate(ev("QueueCallerJoin", *_caller(f"1.{n}", ("Queue", "q"))))
        tr.translate(ev("QueueCallerLeave", *_caller(f"1.{n}", ("Queue", "q"))))
    assert len(tr._calls) == 50 and len(tr._leaving) <= 50


def test_the_call_back_user_event_of_the_dialplan():
    tr = EventTranslator(clock=lambda: NOW)
    user = [("Privilege", "user,all"), ("Channel", "PJSIP/agent1001-00000031"), ("UserEvent", "HotlineCallBack")]
    assert tr.translate(ev("UserEvent", *user, ("CallBack", "17"), ("DialStatus", "NOANSWER"))) == [
        CallBackDialled(at=NOW, call_back_id=17, dial_status="NOANSWER")]
    assert tr.translate(ev("UserEvent", *user, ("CallBack", ""), ("DialStatus", "ANSWER"))) == []
    assert tr.translate(ev("UserEvent", *user[:2], ("UserEvent", "Other"), ("CallBack", "17"))) == []


# -- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, pairs", [
    ("AgentConnect", [("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "three"), ("RingTime", "1")]),
    ("AgentComplete", [("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "3")]),
    ("AgentRingNoAnswer", [("Uniqueid", "1.1"), ("Queue", "q"), ("RingTime", "")]),
    ("QueueCallerAbandon", [("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "1e999x")]),
    ("QueueCallerAbandon", [("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "nan")]),
    ("AgentComplete", [("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "3"), ("TalkTime", "1e999")]),
    ("QueueMemberStatus", [("Queue", "q"), ("Status", "ringing")]),
    ("QueueMemberAdded", [("Queue", "q"), ("Penalty", "-x")]),
    ("OriginateResponse", [("Response", "Success"), ("Reason", "4")]),
    ("OriginateResponse", [("ActionID", "cb-1"), ("Reason", "four")]),
    ("QueueCallerJoin", [("Uniqueid", "1.1"), ("Queue", "q"), ("Position", "first")]),
    ("SomethingNew", [("Queue", "q")]),
    ("QueueCallerLeave", [("Uniqueid", "never-joined")]),
])
def test_malformed_or_unknown_events_are_skipped(name, pairs):
    assert EventTranslator(clock=lambda: NOW).translate(ev(name, *pairs)) == []


def test_odd_but_readable_values():
    tr = EventTranslator(clock=lambda: NOW)
    [completed] = tr.translate(ev("AgentComplete", ("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "3"),
                                  ("TalkTime", "9"), ("Reason", "weird")))
    assert completed.ended_by == "caller"
    [transfer] = tr.translate(ev("AgentComplete", ("Uniqueid", "1.1"), ("Queue", "q"), ("HoldTime", "3"),
                                 ("TalkTime", "9"), ("Reason", "transfer")))
    assert transfer.ended_by == "transfer"
    [joined] = tr.translate(ev("QueueCallerJoin", ("Uniqueid", "1.2"), ("Queue", "q"), ("CallerIDNum", "<unknown>")))
    assert joined.caller == "" and joined.ticket == "" and joined.position == 0


# -- QueueStatus snapshots ---------------------------------------------------------------------------------------

def _list(action_id: str) -> list[AmiEvent]:
    _parsed, events, _out = replay("ami-queue-events.txt")
    return [e for e in events if e.action_id == action_id]


def test_snapshots_from_a_queue_status_while_a_caller_waits():
    assert snapshots_from_status(_list("qs-5"), NOW) == [QueueSnapshot(
        at=NOW, queue="support",
        members=(MemberStatus(at=NOW, queue="support", interface="SIP/agent2", agent="Agent Two", device=6,
                              penalty=2),),
        callers=(CallerJoined(at=NOW - 1, queue="support", call_id="1795846287.2", caller="5557654321",
                              position=1),))]


def test_snapshots_of_every_queue_and_of_a_paused_member():
    support, sales = snapshots_from_status(_list("qs-1"), NOW)
    assert (support.queue, support.members, support.callers) == ("support", (), ())
    assert [(m.agent, m.interface, m.device) for m in sales.members] == [("Agent One", "SIP/agent1", 1)]
    [paused] = snapshots_from_status(_list("qs-2"), NOW)
    assert paused.members[0].paused and paused.members[0].reason == "lunch break"


def test_a_malformed_entry_of_a_queue_status_is_skipped():
    events = [ev("QueueParams", ("Queue", "q")), ev("QueueMember", ("Queue", "q"), ("Name", "A"), ("Status", "x")),
              ev("QueueEntry", ("Queue", "q"), ("Uniqueid", "1.1"), ("Wait", "??")),
              ev("QueueEntry", ("Queue", "q"), ("Uniqueid", "1.2"), ("Wait", "5")), ev("QueueMember")]
    [snapshot] = snapshots_from_status(events, NOW)
    assert snapshot.members == () and [(c.call_id, c.at) for c in snapshot.callers] == [("1.2", NOW - 5)]
