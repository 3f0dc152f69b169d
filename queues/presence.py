"""Where each agent stands right now, rebuilt from Asterisk's queue events (``queues.events``) and kept in
Redis, so every process (the web's agent page, the wallboard, the FastAGI handlers) reads the same thing.

Asterisk is the source of truth: a pause is true when its QueueMemberPause arrives, not when it was asked
for, and a QueueSnapshot (after the AMI link reconnects) replaces what is known of its queue. Agents are
keyed by code (the queue MemberName); events that give only a device are mapped to the code through the
interfaces seen in MemberAdded / MemberStatus events.

An agent is ``logged_out`` (in no queue), else, first match wins: ``on_call`` (a queue call, or its phone
in use), ``ringing``, ``paused`` (paused in every queue it is in), ``wrap_up`` (for ``wrap_up_seconds`` after
a call, computed when read from the call's end, no timer), ``available``. A logged-out agent keeps its last
pause, so that its next login keeps it too. After each change that shows, a small JSON message goes out on
``<prefix>agent:<code>`` (the agent's screen) and ``<prefix>agents`` (the wallboard).

Keys (under ``prefix``): ``presence:agent:<code>`` (the agent's record, JSON), ``presence:agents`` (the set of
codes), ``presence:interfaces`` (hash: interface -> code). Redis errors pass up to the caller.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum

import redis

from queues import events as ev

# Asterisk's device states (QueueMemberStatus Status).
_UNKNOWN, _NOT_INUSE, _INVALID, _UNAVAILABLE = 0, 1, 4, 5
_IN_USE = frozenset({2, 3, 8})  # in use, busy, on hold
_RINGING = frozenset({6, 7})  # ringing, ringing while in use
_IDLE = frozenset({_NOT_INUSE, _INVALID, _UNAVAILABLE})  # surely on no call
_MAX_TRIES = 25


class AgentStatus(str, Enum):
    logged_out = "logged_out"
    available = "available"
    ringing = "ringing"
    on_call = "on_call"
    wrap_up = "wrap_up"
    paused = "paused"


@dataclass(frozen=True)
class CurrentCall:
    call_id: str
    ticket: str
    queue: str
    since: float


@dataclass(frozen=True)
class AgentState:
    """One agent now. ``paused``/``reason``/``paused_since``: paused in every queue it is in (for a
    logged-out agent: the pause its next login keeps)."""

    code: str
    state: AgentStatus
    since: float | None = None
    interface: str = ""
    queues: tuple[str, ...] = ()
    paused: bool = False
    reason: str = ""
    paused_since: float | None = None
    call: CurrentCall | None = None
    wrap_up_until: float | None = None
    reachable: bool = True  # False: its phone is unregistered or unknown to Asterisk

    @property
    def logged_in(self) -> bool:
        return self.state is not AgentStatus.logged_out

    def message(self) -> dict:
        """What the agent's screen and the wallboard are told."""
        call = self.call
        out = {"code": self.code, "state": self.state.value, "since": self.since,
               "reason": self.reason if self.paused else "", "call_id": call.call_id if call else "",
               "ticket": call.ticket if call else "", "queue": call.queue if call else ""}
        if self.wrap_up_until is not None:
            out["until"] = self.wrap_up_until
        return out


@dataclass(frozen=True)
class PausedAgent:
    code: str
    reason: str
    since: float
    seconds: float  # time in pause so far


@dataclass(frozen=True)
class QueueCounts:
    """Agents by state in one queue (or in all, ``queue`` None); the five states add up to ``logged_in``."""

    queue: str | None
    logged_in: int = 0
    available: int = 0
    ringing: int = 0
    on_call: int = 0
    wrap_up: int = 0
    paused: int = 0
    unreachable: int = 0  # logged in with a phone Asterisk cannot reach (counted in their state too)
    paused_agents: tuple[PausedAgent, ...] = ()


class AgentPresence:
    """The agents' live states in Redis, changed only by ``apply(event)``."""

    def __init__(self, redis_client, *, prefix: str, wrap_up_seconds: int = 0, clock=time.time) -> None:
        self._redis = redis_client
        self.prefix = prefix
        self.wrap_up_seconds = wrap_up_seconds
        self._clock = clock
        self._codes = f"{prefix}presence:agents"
        self._interfaces = f"{prefix}presence:interfaces"

    # -- reading ---------------------------------------------------------------------------------

    def state(self, code: str, now: float | None = None) -> AgentState:
        now = self._clock() if now is None else now
        return self._view(code, _load(self._redis.get(self._key(code))), now)

    def all_states(self, now: float | None = None) -> list[AgentState]:
        now = self._clock() if now is None else now
        return [self._view(code, record, now) for code, record in self._records()]

    def queue_counts(self, queue: str | None = None, now: float | None = None) -> QueueCounts:
        now = self._clock() if now is None else now
        counts = dict.fromkeys(("logged_in", *(s.value for s in AgentStatus if s.value != "logged_out"),
                                "unreachable"), 0)
        paused: list[PausedAgent] = []
        for code, record in self._records():
            status = self._status(record, now, queue)
            if status is AgentStatus.logged_out:
                continue
            counts["logged_in"] += 1
            counts[status.value] += 1
            counts["unreachable"] += record["device"] in (_INVALID, _UNAVAILABLE)
            if status is AgentStatus.paused:
                reason, since = _pause_in(record, queue)
                paused.append(PausedAgent(code, reason, since, max(0.0, now - since)))
        paused.sort(key=lambda p: p.since)
        return QueueCounts(queue, **counts, paused_agents=tuple(paused))

    # -- events ----------------------------------------------------------------------------------

    def apply(self, event) -> None:
        """Take one queue event into account; events of other kinds, and surprises (a call of an agent never
        seen, the removal of a member never added), change nothing they should not."""
        self.apply_many((event,))

    def apply_many(self, events) -> None:
        """Take events into account in order, as ``apply`` would one by one, with a few Redis round trips
        per batch instead of several per event (the queue watch hands over what has arrived)."""
        chunk = []
        for event in events:
            if isinstance(event, ev.QueueSnapshot):  # rare (a reconnect): on its own, between the others
                self._apply_batch(chunk)
                chunk = []
                self._snapshot(event)
            elif type(event) in _CHANGES:
                chunk.append(event)
        self._apply_batch(chunk)

    def _apply_batch(self, events: list) -> None:
        if not events:
            return
        asked = sorted({e.interface for e in events if not getattr(e, "agent", "") and getattr(e, "interface", "")})
        known = dict(zip(asked, self._redis.hmget(self._interfaces, asked))) if asked else {}
        pairs = []
        for event in events:  # a member added in this batch names its device for the events after it
            interface = getattr(event, "interface", "")
            if getattr(event, "agent", ""):
                code = event.agent
                if interface:
                    known[interface] = code
            elif interface:
                code = known.get(interface)
                code = code.decode() if isinstance(code, bytes) else (code or interface)  # MemberName's default
            else:
                continue
            pairs.append((event, code))
        if not pairs:
            return
        codes = sorted({code for _, code in pairs})
        keys = [self._key(code) for code in codes]
        with self._redis.pipeline() as pipe:
            for _ in range(_MAX_TRIES):
                try:
                    pipe.watch(*keys)
                    records = {code: _load(raw) for code, raw in zip(codes, pipe.mget(keys))}
                    changed, messages = set(), []
                    for event, code in pairs:
                        record = records[code]
                        before = self._view(code, record, event.at)
                        if not _CHANGES[type(event)](record, event):
                            continue
                        after = self._settle(code, record, before, event.at)
                        changed.add(code)
                        if after.message() != before.message():
                            messages.append((code, after.message()))
                    if not changed:
                        pipe.unwatch()
                        return
                    pipe.multi()
                    for code in sorted(changed):
                        record = records[code]
                        pipe.set(self._key(code), json.dumps(record, separators=(",", ":")))
                        pipe.sadd(self._codes, code)
                        if record["interface"]:
                            pipe.hset(self._interfaces, record["interface"], code)
                    pipe.execute()
                    break
                except redis.WatchError:  # another process changed one of these agents meanwhile: read again
                    continue
            else:
                raise redis.WatchError(f"agents' presence kept changing under {_MAX_TRIES} tries")
        self._publish(messages)

    def _publish(self, messages: list[tuple[str, dict]]) -> None:
        """Every change in order: the screen pop must see an answered call even if it ended in the batch."""
        if not messages:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for code, message in messages:
                text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
                pipe.publish(f"{self.prefix}agent:{code}", text)
                pipe.publish(f"{self.prefix}agents", text)
            pipe.execute()

    def _snapshot(self, snapshot: ev.QueueSnapshot) -> None:
        members = {}
        for member in snapshot.members:
            code = self._code_of(member)
            if code:
                members[code] = member
        known = {code for code, _ in self._records()}
        for code in sorted(known | set(members)):
            member = members.get(code)
            if member is not None:
                self._update(code, snapshot.at, lambda record, m=member: _member_status(record, m, snapshot=True))
            else:
                self._update(code, snapshot.at, lambda record: _leave(record, snapshot.queue))

    def _code_of(self, event) -> str:
        if getattr(event, "agent", ""):
            return event.agent
        interface = getattr(event, "interface", "")
        if not interface:
            return ""
        code = self._redis.hget(self._interfaces, interface)
        return code.decode() if isinstance(code, bytes) else (code or interface)  # Asterisk's MemberName default

    def _update(self, code: str, at: float, change) -> None:
        key = self._key(code)
        with self._redis.pipeline() as pipe:
            for _ in range(_MAX_TRIES):
                try:
                    pipe.watch(key)
                    record = _load(pipe.get(key))
                    before = self._view(code, record, at)
                    if not change(record):
                        pipe.unwatch()
                        return
                    after = self._settle(code, record, before, at)
                    pipe.multi()
                    pipe.set(key, json.dumps(record, separators=(",", ":")))
                    pipe.sadd(self._codes, code)
                    if record["interface"]:
                        pipe.hset(self._interfaces, record["interface"], code)
                    pipe.execute()
                    break
                except redis.WatchError:  # another process changed this agent meanwhile: read it again
                    continue
            else:
                raise redis.WatchError(f"agent {code}'s presence kept changing under {_MAX_TRIES} tries")
        message = after.message()
        if message != before.message():
            self._publish([(code, message)])

    def _settle(self, code: str, record: dict, before: AgentState, at: float) -> AgentState:
        """Note when the state changed (``since``), so a read later gives the same answer."""
        status = self._status(record, at)
        if status is before.state:
            record["state"], record["since"] = status.value, before.since
        else:
            record["state"], record["since"] = status.value, at
        return self._view(code, record, at)

    # -- deriving states ---------------------------------------------------------------------------

    def _status(self, record: dict, now: float, queue: str | None = None) -> AgentStatus:
        queues = record["queues"]
        if not queues or (queue is not None and queue not in queues):
            return AgentStatus.logged_out
        if record["call"] or record["device"] in _IN_USE:
            return AgentStatus.on_call
        if record["ring"] or record["device"] in _RINGING:
            return AgentStatus.ringing
        if (queues[queue]["paused"] if queue is not None else all(q["paused"] for q in queues.values())):
            return AgentStatus.paused
        if self._wrap_up_until(record, now) is not None:
            return AgentStatus.wrap_up
        return AgentStatus.available

    def _wrap_up_until(self, record: dict, now: float) -> float | None:
        start = record["wrap_from"]
        if start is None or self.wrap_up_seconds <= 0 or now >= start + self.wrap_up_seconds:
            return None
        return start + self.wrap_up_seconds

    def _view(self, code: str, record: dict, now: float) -> AgentState:
        status = self._status(record, now)
        since = record["since"]
        if status.value != record["state"]:  # the only change with time alone: wrap-up is over
            until = record["wrap_from"] + self.wrap_up_seconds if record["wrap_from"] is not None else None
            since = until if record["state"] == AgentStatus.wrap_up.value and until is not None else since
        pause, call = record["pause"], record["call"]
        return AgentState(
            code=code, state=status, since=since, interface=record["interface"], queues=tuple(sorted(record["queues"])),
            paused=pause is not None, reason=pause["reason"] if pause else "",
            paused_since=pause["since"] if pause else None,
            call=CurrentCall(call["call_id"], call["ticket"], call["queue"], call["since"]) if call else None,
            wrap_up_until=self._wrap_up_until(record, now) if status is AgentStatus.wrap_up else None,
            reachable=record["device"] not in (_INVALID, _UNAVAILABLE))

    # -- storage ---------------------------------------------------------------------------------

    def _key(self, code: str) -> str:
        return f"{self.prefix}presence:agent:{code}"

    def _records(self) -> list[tuple[str, dict]]:
        codes = sorted(c.decode() if isinstance(c, bytes) else c for c in self._redis.smembers(self._codes))
        if not codes:
            return []
        raws = self._redis.mget([self._key(c) for c in codes])
        return [(code, _load(raw)) for code, raw in zip(codes, raws) if raw is not None]


def _load(raw) -> dict:
    record = {"interface": "", "queues": {}, "pause": None, "call": None, "ring": None, "device": _UNKNOWN,
              "rang": False, "wrap_from": None, "done": "", "state": AgentStatus.logged_out.value, "since": None}
    if raw is not None:
        record.update(json.loads(raw))
    return record


def _pause_in(record: dict, queue: str | None) -> tuple[str, float]:
    if queue is not None:
        member = record["queues"][queue]
        return member["reason"], member["since"]
    return record["pause"]["reason"], record["pause"]["since"]


# -- how each event changes an agent's record (True: something changed) --------------------------------


def _join(record: dict, queue: str, at: float, *, penalty: int, paused: bool, reason: str) -> None:
    if not record["queues"]:  # a fresh login: nothing of the last session's calls counts
        record.update(pause=None, ring=None, rang=False, wrap_from=None)
    old = record["queues"].get(queue)
    since = old["since"] if old and old["paused"] and paused else (at if paused else None)
    record["queues"][queue] = {"penalty": penalty, "paused": paused, "reason": reason if paused else "",
                               "since": since}
    _settle_pause(record)


def _leave(record: dict, queue: str) -> bool:
    if queue not in record["queues"]:
        return False
    del record["queues"][queue]
    if not record["queues"]:
        record.update(ring=None, rang=False, wrap_from=None)
    _settle_pause(record)
    return True


def _settle_pause(record: dict) -> None:
    """The agent is paused when paused in every queue, since the last of them; a logged-out agent keeps its
    last pause for the next login."""
    queues = record["queues"]
    if not queues:
        return
    if all(q["paused"] for q in queues.values()):
        latest = max(queues.values(), key=lambda q: q["since"] or 0.0)
        record["pause"] = {"reason": latest["reason"], "since": latest["since"]}
    else:
        record["pause"] = None


def _member_added(record: dict, e: ev.MemberAdded) -> bool:
    record["interface"] = e.interface
    _join(record, e.queue, e.at, penalty=e.penalty, paused=e.paused, reason=e.reason)
    return True


def _member_removed(record: dict, e: ev.MemberRemoved) -> bool:
    return _leave(record, e.queue)


def _member_paused(record: dict, e: ev.MemberPaused) -> bool:
    member = record["queues"].get(e.queue)
    if e.interface:
        record["interface"] = e.interface
    # Asterisk pausing a member we had not seen join means it is a member: take its word.
    _join(record, e.queue, e.at, penalty=member["penalty"] if member else 0, paused=e.paused, reason=e.reason)
    return True


def _member_status(record: dict, e: ev.MemberStatus, snapshot: bool = False) -> bool:
    record["interface"] = e.interface or record["interface"]
    _join(record, e.queue, e.at, penalty=e.penalty, paused=e.paused, reason=e.reason)
    record["device"] = e.device
    if e.device in _RINGING:
        record["rang"] = True
    elif record["ring"] and (record["rang"] or snapshot) and e.device != _UNKNOWN:
        record.update(ring=None, rang=False)  # it rang and stopped: taken elsewhere, or the caller left
    if snapshot and e.device in _IDLE and not e.in_call:
        record["call"] = None  # the end of a call was missed while the link was down
    return True


def _agent_rang(record: dict, e: ev.AgentRang) -> bool:
    if e.call_id == record["done"] or (record["call"] and record["call"]["call_id"] == e.call_id):
        return False  # late news of a call already answered or over
    record["ring"] = {"call_id": e.call_id, "queue": e.queue, "since": e.at}
    record["rang"] = record["device"] in _RINGING
    if e.interface:
        record["interface"] = e.interface
    return True


def _agent_missed(record: dict, e: ev.AgentMissed) -> bool:
    ring = record["ring"]
    if ring is None or ring["call_id"] != e.call_id:
        return False
    record.update(ring=None, rang=False)
    if record["device"] in _RINGING:
        record["device"] = _NOT_INUSE
    return True


def _call_answered(record: dict, e: ev.CallAnswered) -> bool:
    if e.call_id == record["done"]:
        return False
    record.update(call={"call_id": e.call_id, "ticket": e.ticket, "queue": e.queue, "since": e.at},
                  ring=None, rang=False, wrap_from=None)
    return True


def _call_completed(record: dict, e: ev.CallCompleted) -> bool:
    call = record["call"]
    if call is not None and call["call_id"] != e.call_id:
        return False  # not the call it is on now
    record.update(call=None, wrap_from=e.at, done=e.call_id)
    if record["ring"] and record["ring"]["call_id"] == e.call_id:
        record.update(ring=None, rang=False)
    if record["device"] in _IN_USE:
        record["device"] = _NOT_INUSE  # the phone's own status follows; wrap-up starts now
    return True


_CHANGES = {
    ev.MemberAdded: _member_added,
    ev.MemberRemoved: _member_removed,
    ev.MemberPaused: _member_paused,
    ev.MemberStatus: _member_status,
    ev.AgentRang: _agent_rang,
    ev.AgentMissed: _agent_missed,
    ev.CallAnswered: _call_answered,
    ev.CallCompleted: _call_completed,
}
