"""What happens in the queues, in the hotline's words: the events the live statistics, the agents' states and
the call-back list are built from.

Two sources speak these events: the AMI link (Asterisk's live events, stamped when they arrive) and the
queue_log file (Asterisk's own record, stamped by Asterisk). Both translate into the classes below, so the
figures rebuilt from a queue_log agree with the live ones. ``at`` is Unix time in seconds; ``call_id`` is
the caller channel's Uniqueid (queue_log's callid); ``agent`` is the queue member's MemberName (queue_log's
agent field for call events) and ``interface`` its device (``PJSIP/agent1001``) where the source gives it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallerJoined:
    """A caller entered a queue (AMI QueueCallerJoin, queue_log ENTERQUEUE)."""

    at: float
    queue: str
    call_id: str
    caller: str = ""
    position: int = 0
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class AgentRang:
    """A member's phone started ringing for a caller (AMI AgentCalled; queue_log has no line for it)."""

    at: float
    queue: str
    call_id: str
    agent: str
    interface: str = ""


@dataclass(frozen=True, slots=True)
class AgentMissed:
    """A member's phone rang out without an answer (AMI AgentRingNoAnswer, queue_log RINGNOANSWER)."""

    at: float
    queue: str
    call_id: str
    agent: str
    ring_seconds: float
    interface: str = ""


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """An agent took a caller (AMI AgentConnect, queue_log CONNECT): ``hold_seconds`` waited in the queue."""

    at: float
    queue: str
    call_id: str
    agent: str
    hold_seconds: float
    ring_seconds: float = 0.0
    interface: str = ""
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class CallCompleted:
    """A conversation ended (AMI AgentComplete, queue_log COMPLETECALLER / COMPLETEAGENT / TRANSFER);
    ``ended_by`` is "caller", "agent" or "transfer"."""

    at: float
    queue: str
    call_id: str
    agent: str
    hold_seconds: float
    talk_seconds: float
    ended_by: str = "caller"
    interface: str = ""
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class CallerAbandoned:
    """A caller hung up while waiting (AMI QueueCallerAbandon, queue_log ABANDON)."""

    at: float
    queue: str
    call_id: str
    wait_seconds: float
    position: int = 0
    original_position: int = 0
    caller: str = ""
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class CallerGaveUp:
    """A caller left a queue unanswered without hanging up: the queue timed out, emptied or the caller
    pressed a key (queue_log EXITWITHTIMEOUT, EXITEMPTY, EXITWITHKEY; AMI QueueCallerLeave of a caller
    that was neither answered nor abandoned). ``why`` is "timeout", "empty" or "key"."""

    at: float
    queue: str
    call_id: str
    wait_seconds: float
    why: str = "timeout"
    caller: str = ""
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class MemberAdded:
    """An agent's device joined a queue (AMI QueueMemberAdded, queue_log ADDMEMBER)."""

    at: float
    queue: str
    interface: str
    agent: str = ""
    penalty: int = 0
    paused: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """An agent's device left a queue (AMI QueueMemberRemoved, queue_log REMOVEMEMBER)."""

    at: float
    queue: str
    interface: str
    agent: str = ""


@dataclass(frozen=True, slots=True)
class MemberPaused:
    """A member was paused or unpaused, with the reason given (AMI QueueMemberPause, queue_log PAUSE /
    UNPAUSE). Asterisk's event, not the action that asked for it, is what makes a pause true."""

    at: float
    queue: str
    agent: str
    paused: bool
    reason: str = ""
    interface: str = ""


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A member's device changed state (AMI QueueMemberStatus): ``device`` is Asterisk's device state
    number (1 not in use, 2 in use, 3 busy, 5 unavailable, 6 ringing, 8 on hold ...)."""

    at: float
    queue: str
    interface: str
    agent: str
    device: int
    paused: bool = False
    reason: str = ""
    in_call: bool = False
    penalty: int = 0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What Asterisk says a queue holds right now (AMI QueueStatus after a (re)connect): the members with
    their states and the callers waiting. It replaces the live "now" figures; the day's counters stay."""

    at: float
    queue: str
    members: tuple[MemberStatus, ...] = ()
    callers: tuple[CallerJoined, ...] = ()  # ``at`` of each: when that caller joined (now minus its Wait)


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """How a call the hotline placed itself (a call-back, a masked call) went (AMI OriginateResponse):
    ``originate_id`` is the id ``QueueControl.originate`` returned; ``reason`` is Asterisk's number
    (4 answered, 5 busy, 3 no answer, 8 congestion, 0 failed)."""

    at: float
    originate_id: str
    answered: bool
    reason: int = 0
    channel: str = ""
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class CallBackDialled:
    """The citizen's leg of a call-back was dialled (the dialplan's UserEvent HotlineCallBack after Dial):
    ``dial_status`` is Asterisk's DIALSTATUS (ANSWER, BUSY, NOANSWER, CONGESTION, CHANUNAVAIL, CANCEL)."""

    at: float
    call_back_id: int
    dial_status: str


QueueEvent = (CallerJoined | AgentRang | AgentMissed | CallAnswered | CallCompleted | CallerAbandoned | CallerGaveUp
              | MemberAdded | MemberRemoved | MemberPaused | MemberStatus | QueueSnapshot | OriginateResult
              | CallBackDialled)
