"""AMI events in the hotline's words (``queues.events``).

Asterisk 20's queue events, as recorded in shared/fixtures: RingTime is in milliseconds in
AgentRingNoAnswer but in seconds in AgentConnect; the ticket rides on the caller's events as
``ChanVariable: HOTLINE_TICKET=...``. With ``timestampevents`` off an event carries no time, so it is
stamped when it arrives, unless it has a ``Timestamp:`` header.

A caller who leaves a queue unanswered without hanging up (timeout, empty queue, a key) gets no event of
its own: QueueCallerLeave comes for every caller, and for an answered one it comes *before* AgentConnect.
So a leave is held until something decides it: AgentConnect (answered), or the caller's Hangup,
VarSet of QUEUESTATUS, Newexten or next QueueCallerJoin (gave up), or ``LEAVE_GRACE`` seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from ami.link import AmiEvent
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
    QueueEvent,
    QueueSnapshot,
)

__all__ = ["EventTranslator", "snapshots_from_status", "TICKET_VARIABLE"]

log = logging.getLogger("hotline.ami.translate")

TICKET_VARIABLE = "HOTLINE_TICKET"
CALL_BACK_USER_EVENT = "HotlineCallBack"  # extensions.conf [hotline-callback], from its "h" extension
MAX_CALLS = 10_000  # callers followed at once; the oldest is forgotten beyond this
LEAVE_GRACE = 10.0  # seconds after which an undecided leave counts as giving up
_ENDED_BY = ("caller", "agent", "transfer")
_WHY = {"TIMEOUT": "timeout", "LEAVEEMPTY": "empty", "LEAVEUNAVAIL": "empty"}
_DECISIVE = {"Hangup", "Newexten", "QueueCallerJoin"}  # the caller's channel moved on: the leave was no answer


class _Malformed(ValueError):
    pass


@dataclass
class _Call:
    queue: str
    joined_at: float
    caller: str = ""
    ticket: str = ""
    answered: bool = False
    abandoned: bool = False
    left_at: float | None = None


def _number(event: AmiEvent, key: str, kind: Callable = int, default=None):
    text = event.get(key).strip()
    if not text:
        if default is None:
            raise _Malformed(f"{event.name} has no {key}")
        return default
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _Malformed(f"{event.name} has a {key} that is not a number")
    return value


def _flag(event: AmiEvent, key: str) -> bool:
    return event.get(key).strip().lower() in ("1", "yes", "true")


def _caller(event: AmiEvent) -> str:
    number = event.get("CallerIDNum")
    return "" if number in ("<unknown>", "unknown") else number


def _member_status(event: AmiEvent, at: float, *, interface_key: str = "Interface",
                   agent_key: str = "MemberName") -> MemberStatus:
    return MemberStatus(at=at, queue=event.get("Queue"), interface=event.get(interface_key),
                        agent=event.get(agent_key), device=_number(event, "Status"), paused=_flag(event, "Paused"),
                        reason=event.get("PausedReason"), in_call=_flag(event, "InCall"),
                        penalty=_number(event, "Penalty", default=0))


class EventTranslator:
    """Turns each AMI event into zero or more queue events; keeps a little state per waiting caller."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._leaving: dict[str, _Call] = {}  # left unanswered, not yet known why
        self._handlers = {
            "QueueCallerJoin": self._join, "AgentCalled": self._rang, "AgentRingNoAnswer": self._missed,
            "AgentConnect": self._answered, "AgentComplete": self._completed,
            "QueueCallerAbandon": self._abandoned, "QueueCallerLeave": self._left,
            "QueueMemberAdded": self._member_added, "QueueMemberRemoved": self._member_removed,
            "QueueMemberPause": self._member_paused, "QueueMemberStatus": self._member_status,
            "QueueMemberPenalty": self._member_status, "OriginateResponse": self._originated,
            "UserEvent": self._user_event, "Hangup": self._hangup,
        }

    def translate(self, event: AmiEvent) -> list[QueueEvent]:
        """The queue events this AMI event means; [] for events of no interest or that cannot be read."""
        at = self._stamp(event)
        out = self._settle(event, at)
        handler = self._handlers.get(event.name)
        if handler is not None:
            try:
                out.extend(handler(event, at))
            except _Malformed as exc:
                log.debug("AMI event skipped: %s", exc)
        return out

    def _stamp(self, event: AmiEvent) -> float:
        try:
            stamp = float(event.get("Timestamp"))
        except ValueError:
            return self._clock()
        return stamp if math.isfinite(stamp) else self._clock()

    def _ticket(self, event: AmiEvent, call: _Call | None = None) -> str:
        return event.chan_vars.get(TICKET_VARIABLE) or (call.ticket if call else "")

    def _remember(self, call_id: str, call: _Call) -> None:
        self._calls.pop(call_id, None)
        self._calls[call_id] = call
        while len(self._calls) > MAX_CALLS:
            forgotten, _ = self._calls.popitem(last=False)
            self._leaving.pop(forgotten, None)

    def _settle(self, event: AmiEvent, at: float) -> list[QueueEvent]:
        """Leaves decided by this event (or by the time that passed) become CallerGaveUp."""
        out: list[QueueEvent] = []
        uid = event.get("Uniqueid")
        for call_id, call in list(self._leaving.items()):
            why = "timeout"
            if call_id == uid and event.name == "VarSet" and event.get("Variable") == "QUEUESTATUS":
                why = _WHY.get(event.get("Value"), "timeout")
            elif not ((call_id == uid and event.name in _DECISIVE) or at - call.left_at >= LEAVE_GRACE):
                continue
            del self._leaving[call_id]
            if self._calls.get(call_id) is call:
                del self._calls[call_id]
            out.append(CallerGaveUp(at=call.left_at, queue=call.queue, call_id=call_id,
                                    wait_seconds=max(0.0, call.left_at - call.joined_at), why=why,
                                    caller=call.caller, ticket=call.ticket))
        return out

    # -- callers --

    def _join(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        call_id = event.get("Uniqueid")
        call = _Call(queue=event.get("Queue"), joined_at=at, caller=_caller(event), ticket=self._ticket(event))
        joined = CallerJoined(at=at, queue=call.queue, call_id=call_id, caller=call.caller,
                              position=_number(event, "Position", default=0), ticket=call.ticket)
        self._remember(call_id, call)
        return [joined]

    def _rang(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [AgentRang(at=at, queue=event.get("Queue"), call_id=event.get("Uniqueid"),
                          agent=event.get("MemberName"), interface=event.get("Interface"))]

    def _missed(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [AgentMissed(at=at, queue=event.get("Queue"), call_id=event.get("Uniqueid"),
                            agent=event.get("MemberName"), ring_seconds=_number(event, "RingTime", float) / 1000.0,
                            interface=event.get("Interface"))]

    def _answered(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        call_id = event.get("Uniqueid")
        call = self._calls.get(call_id)
        answered = CallAnswered(at=at, queue=event.get("Queue"), call_id=call_id, agent=event.get("MemberName"),
                                hold_seconds=_number(event, "HoldTime", float),
                                ring_seconds=_number(event, "RingTime", float, default=0.0),
                                interface=event.get("Interface"), ticket=self._ticket(event, call))
        if call is not None:
            call.answered = True
            self._leaving.pop(call_id, None)
        return [answered]

    def _completed(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        call_id = event.get("Uniqueid")
        reason = event.get("Reason").lower()
        if reason not in _ENDED_BY:
            log.debug("AgentComplete with an unknown Reason; counted as ended by the caller")
            reason = "caller"
        completed = CallCompleted(at=at, queue=event.get("Queue"), call_id=call_id, agent=event.get("MemberName"),
                                  hold_seconds=_number(event, "HoldTime", float),
                                  talk_seconds=_number(event, "TalkTime", float),
                                  ended_by=reason, interface=event.get("Interface"),
                                  ticket=self._ticket(event, self._calls.get(call_id)))
        self._calls.pop(call_id, None)
        return [completed]

    def _abandoned(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        call_id = event.get("Uniqueid")
        call = self._calls.get(call_id)
        abandoned = CallerAbandoned(at=at, queue=event.get("Queue"), call_id=call_id,
                                    wait_seconds=_number(event, "HoldTime", float),
                                    position=_number(event, "Position", default=0),
                                    original_position=_number(event, "OriginalPosition", default=0),
                                    caller=_caller(event), ticket=self._ticket(event, call))
        if call is not None:
            call.abandoned = True
        return [abandoned]

    def _left(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        call_id = event.get("Uniqueid")
        call = self._calls.get(call_id)
        if call is None or call.answered:
            return []
        if call.abandoned:
            del self._calls[call_id]
        else:
            call.left_at = at
            call.ticket = self._ticket(event, call)
            self._leaving[call_id] = call
        return []

    def _hangup(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        self._calls.pop(event.get("Uniqueid"), None)
        return []

    # -- members --

    def _member_added(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [MemberAdded(at=at, queue=event.get("Queue"), interface=event.get("Interface"),
                            agent=event.get("MemberName"), penalty=_number(event, "Penalty", default=0),
                            paused=_flag(event, "Paused"), reason=event.get("PausedReason"))]

    def _member_removed(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [MemberRemoved(at=at, queue=event.get("Queue"), interface=event.get("Interface"),
                              agent=event.get("MemberName"))]

    def _member_paused(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [MemberPaused(at=at, queue=event.get("Queue"), agent=event.get("MemberName"),
                             paused=_flag(event, "Paused"), reason=event.get("PausedReason"),
                             interface=event.get("Interface"))]

    def _member_status(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        return [_member_status(event, at)]

    # -- calls the hotline placed (call-backs) --

    def _originated(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        if not event.action_id:
            raise _Malformed("OriginateResponse has no ActionID")
        uid = event.get("Uniqueid")
        return [OriginateResult(at=at, originate_id=event.action_id, answered=event.get("Response") == "Success",
                                reason=_number(event, "Reason", default=0), channel=event.get("Channel"),
                                call_id="" if uid.startswith("<") else uid)]


    def _user_event(self, event: AmiEvent, at: float) -> Iterable[QueueEvent]:
        if event.get("UserEvent") != CALL_BACK_USER_EVENT:
            return []
        return [CallBackDialled(at=at, call_back_id=_number(event, "CallBack"),
                                dial_status=event.get("DialStatus").strip().upper() or "CANCEL")]


def snapshots_from_status(events: list[AmiEvent], now: float) -> list[QueueSnapshot]:
    """What each queue holds, from the events of a QueueStatus list (QueueParams, QueueMember, QueueEntry)."""
    queues: dict[str, tuple[list[MemberStatus], list[CallerJoined]]] = {}
    for event in events:
        name = event.get("Queue")
        if event.name not in ("QueueParams", "QueueMember", "QueueEntry") or not name:
            continue
        members, callers = queues.setdefault(name, ([], []))
        try:
            if event.name == "QueueMember":
                members.append(_member_status(event, now, interface_key="Location", agent_key="Name"))
            elif event.name == "QueueEntry":
                callers.append(CallerJoined(at=now - _number(event, "Wait", float, default=0.0), queue=name,
                                            call_id=event.get("Uniqueid"), caller=_caller(event),
                                            position=_number(event, "Position", default=0),
                                            ticket=event.chan_vars.get(TICKET_VARIABLE, "")))
        except _Malformed as exc:
            log.debug("QueueStatus entry skipped: %s", exc)
    return [QueueSnapshot(at=now, queue=name, members=tuple(members), callers=tuple(callers))
            for name, (members, callers) in queues.items()]
