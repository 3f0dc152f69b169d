"""The call-back list: missed calls recorded once, offered to free agents, retried, given up, never lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from queues.callbacks import (DIALLING, DONE, GIVEN_UP, NO_NUMBER, OFFERING, WAITING, CallBackList, FreeAgent)
from queues.control import QueueControlUnavailable
from queues.events import CallAnswered, CallBackDialled, CallerAbandoned, CallerGaveUp, OriginateResult

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
NUMBER = "13812345678"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Control:
    """Records the originates asked for (the AMI side is tested in tests/test_ami_*.py)."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def originate(self, originate_id, channel, **kw):
        if self.fail:
            raise QueueControlUnavailable("AMI link down")
        self.calls.append((originate_id, channel, kw))


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def calls(session_factory, clock):
    return CallBackList(session_factory, attempts=2, clock=clock)


def abandon(call_id="1795846287.2", caller=NUMBER, queue="hotline-zh", ticket="2026112800007", at=T0):
    return CallerAbandoned(at.timestamp(), queue, call_id, wait_seconds=40.0, caller=caller, ticket=ticket)


AGENT = FreeAgent("1001", "PJSIP/agent1001", frozenset({"hotline-zh"}))
OTHER = FreeAgent("1002", "PJSIP/agent1002", frozenset({"hotline-en"}))


def offer(calls, control, agents=(AGENT,)):
    return calls.offer_due(list(agents), control, context="hotline-callback", caller_id="12345")


def test_an_abandoned_caller_is_recorded_once_and_listed_masked(calls):
    assert calls.record_missed(abandon()) is True
    assert calls.record_missed(abandon()) is False  # the same call seen again (reconnect, replay)
    [view] = calls.listing()
    assert view.state == WAITING and view.ticket == "2026112800007"
    assert NUMBER not in str(view.as_dict()) and view.caller.endswith("5678")
    assert view.due_at == T0 + timedelta(minutes=30)


@pytest.mark.parametrize("caller", ["", "anonymous", "<unknown>", "12345", "not a number"])
def test_a_caller_without_a_usable_number_is_kept_but_never_dialled(calls, caller):
    calls.record_missed(abandon(caller=caller))
    control = Control()
    assert offer(calls, control) == []
    assert control.calls == []
    [view] = calls.listing(states=[NO_NUMBER])
    assert view.caller == "withheld"


def test_the_agent_of_the_callers_queue_is_rung_first_with_the_ticket_on_the_call(calls):
    calls.record_missed(abandon())
    control = Control()
    [note] = offer(calls, control, agents=(OTHER, AGENT))
    originate_id, channel, kw = control.calls[0]
    assert channel == "PJSIP/agent1001" and kw["exten"] == NUMBER and kw["caller_id"] == "12345"
    assert kw["context"] == "hotline-callback"
    assert kw["variables"]["HOTLINE_TICKET"] == "2026112800007"
    assert note.what == "offered" and note.details == {"agent": "1001"}
    assert calls.listing()[0].state == OFFERING


def test_each_free_agent_gets_one_offer_and_the_oldest_missed_call_goes_first(calls):
    calls.record_missed(abandon("b", at=T0 - timedelta(minutes=1)))
    calls.record_missed(abandon("a", at=T0 - timedelta(minutes=5)))
    calls.record_missed(abandon("c", at=T0))
    control = Control()
    offer(calls, control, agents=(AGENT, OTHER))
    assert len(control.calls) == 2
    states = {v.abandoned_at: v.state for v in calls.listing()}
    assert states[T0 - timedelta(minutes=5)] == OFFERING and states[T0] == WAITING


def test_agent_answers_then_citizen_answers_is_done(calls):
    calls.record_missed(abandon())
    control = Control()
    offer(calls, control)
    originate_id = control.calls[0][0]
    note = calls.on_originate(OriginateResult(T0.timestamp(), originate_id, answered=True, reason=4))
    assert note.what == "answered_by_agent" and calls.listing()[0].state == DIALLING
    cb_id = calls.listing()[0].id
    note = calls.on_dialled(CallBackDialled(T0.timestamp(), cb_id, "ANSWER"))
    assert note.what == "answered" and note.ticket == "2026112800007"
    assert calls.listing() == [] and calls.listing(states=[DONE])[0].attempts == 1


def test_an_agent_who_does_not_answer_does_not_use_up_the_citizens_attempts(calls, clock):
    calls.record_missed(abandon())
    control = Control()
    offer(calls, control)
    note = calls.on_originate(OriginateResult(T0.timestamp(), control.calls[0][0], answered=False, reason=3))
    assert note.what == "agent_missed"
    view = calls.listing()[0]
    assert view.state == WAITING and view.attempts == 0
    assert offer(calls, control) == []  # not before agent_retry_after
    clock.now += timedelta(seconds=31)
    assert len(offer(calls, control)) == 1


def test_a_citizen_who_does_not_answer_is_tried_again_then_given_up(calls, clock):
    calls.record_missed(abandon())
    control = Control()
    for attempt, expected in ((1, "not_answered"), (2, "given_up")):
        offer(calls, control)
        calls.on_originate(OriginateResult(0, control.calls[-1][0], answered=True, reason=4))
        note = calls.on_dialled(CallBackDialled(0, calls.listing(states=[DIALLING])[0].id, "NOANSWER"))
        assert note.what == expected and note.details["attempt"] == attempt
        clock.now += timedelta(minutes=6)
    assert calls.listing(states=[GIVEN_UP])[0].outcome == "NOANSWER"


def test_a_result_for_an_unknown_or_finished_call_back_is_ignored(calls):
    assert calls.on_originate(OriginateResult(0, "cb-999-1-0", answered=True)) is None
    assert calls.on_originate(OriginateResult(0, "vn-7", answered=True)) is None  # not a call-back
    assert calls.on_dialled(CallBackDialled(0, 999, "ANSWER")) is None


def test_asterisk_unreachable_leaves_the_call_back_waiting(calls, clock):
    calls.record_missed(abandon())
    assert offer(calls, Control(fail=True)) == []
    assert calls.listing()[0].state == WAITING
    clock.now += timedelta(minutes=1)
    assert len(offer(calls, Control())) == 1


def test_an_offer_whose_result_never_came_goes_back_to_waiting(calls, clock):
    calls.record_missed(abandon())
    offer(calls, Control())
    clock.now += calls.offer_timeout + timedelta(seconds=1)
    assert calls.reclaim_stuck() == 1
    assert calls.listing()[0].state == WAITING and calls.listing()[0].outcome == "no_result"


def test_a_caller_the_queue_let_go_is_due_after_a_grace_and_off_the_list_once_answered_elsewhere(calls, clock):
    gave_up = CallerGaveUp(T0.timestamp(), "urgent-zh", "1795846800.1", 120.0, "timeout", NUMBER, "2026112800008")
    assert calls.record_missed(gave_up) is True
    assert offer(calls, Control()) == []  # the dialplan may be overflowing it to hotline-zh right now
    assert calls.answered_after_all([CallAnswered(T0.timestamp() + 20, "hotline-zh", "1795846800.1", "1001", 140),
                                     CallAnswered(T0.timestamp() + 20, "hotline-zh", "unrelated.1", "1002", 3)]) == 1
    clock.now += timedelta(minutes=2)
    assert offer(calls, Control()) == [] and calls.listing(states=[DONE])[0].outcome == "answered_in_queue"
    other = CallerGaveUp(T0.timestamp(), "hotline-zh", "1795846800.2", 600.0, "timeout", NUMBER)
    calls.record_missed(other)  # the general queue's timeout: the caller heard the apology
    assert len(offer(calls, Control())) == 1


def test_two_processes_never_offer_one_call_back_twice(session_factory, clock):
    first, second = (CallBackList(session_factory, clock=clock) for _ in range(2))
    first.record_missed(abandon())
    assert second.record_missed(abandon()) is False
    control = Control()
    offer(first, control)
    offer(second, control)
    assert len(control.calls) == 1
