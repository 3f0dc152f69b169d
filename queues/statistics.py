"""Live queue figures for the wallboard, kept in Redis and updated per event in constant time.

The same queue events (``queues.events``) come from the AMI link live and from Asterisk's queue_log on a
rebuild; each event's own ``at`` decides its day, so both ways give the same figures. Per queue and for the
whole hotline (queue ``""``):

waiting
    callers in the queue now (for the hotline: in any queue). A ``QueueSnapshot`` from Asterisk replaces a
    queue's waiting callers.
longest_wait_seconds
    of the callers waiting now, the longest time since they joined their queue (0 with nobody waiting).
offered
    callers who joined the queue today (local day, ``timezone``). For the hotline a call counts once,
    whatever queues it passes through (extensions.conf moves a caller on when a queue times out).
answered / abandoned
    callers an agent answered / who hung up while waiting, today.
short_abandoned
    abandoned callers who waited less than ``short_abandon_seconds``: counted apart, as most are misdials
    or callers who changed their mind. The hotline counts a call's whole wait, all its queues together.
gave_up
    callers who left the queue unanswered without hanging up (the queue timed out, emptied, a key). For the
    hotline: calls whose last queue let them go, so a call moved on to another queue is not counted.
completed
    conversations that ended today (caller or agent hung up, or a transfer).
answered_in_target
    answered callers who waited at most ``service_seconds`` (GB/T 33358: 15 s; 15 s is in, 16 s is out).
    For the hotline the wait counts from the first queue.
service_level
    answered_in_target / (offered - short_abandoned); None when that is 0. Capped at 1 (a call offered
    before midnight and answered after it counts its offer on one day and its answer on the next).
average_speed_of_answer
    mean wait of today's answered calls in seconds (queue: Asterisk's hold time; hotline: the whole
    wait); None with no answered call.
average_handle_time
    mean talk time of today's completed conversations in seconds (wrap-up is not in the events); None
    with none completed.
connection_rate_24h
    answered / (offered - short_abandoned) over the rolling 24 hours (GB/T 33358: at least 95 %), in
    5-minute buckets by each event's time: an event counts while its bucket is one of the 288 latest, the
    current one included, so it leaves the window 24 h after its bucket began (23 h 55 min to 24 h after
    it happened). None when nothing is left to divide; capped at 1. (Hourly sums are kept beside the
    buckets, so a query reads the whole hours inside the window and the 5-minute buckets at its ends.)

An event is counted once per (queue, call), and for the hotline once per call: an event applied twice (a
reconnect, live and rebuild overlapping) changes nothing, checked against a per-call Redis hash that expires
two days after the call. A batch of events costs two pipelined round trips whatever the history, the second
ending with a PUBLISH on ``{prefix}changed`` for the wallboard. Day keys expire three days after their last
write: a new day starts from zero by itself.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from datetime import time as clock_time
from itertools import islice
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from base import metrics
from queues.events import (
    CallAnswered,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
    QueueEvent,
    QueueSnapshot,
)

__all__ = ["AbandonedCall", "QueueFigures", "QueueStatistics", "rebuild"]

HOUR = 3600
BUCKET_SECONDS = 300
WINDOW_SECONDS = 24 * HOUR
WINDOW_FIELDS_SWEPT = 400  # a window hash longer than this (buckets a quiet spell left behind) is swept
DAY_KEY_TTL = 3 * 24 * HOUR
CALL_KEY_TTL = 2 * 24 * HOUR
MIN_CALL_KEY_TTL = HOUR  # an old call replayed from a queue_log needs its key only while the rebuild runs
BATCH = 500

# The rolling window keeps a bucket's three counts in one integer field (one HINCRBY, a third of the fields to
# read): offered in bits 0-20, answered in 21-41, short abandons from 42; 2 million an hour each at most.
_PACK = {"o": 1, "a": 1 << 21, "s": 1 << 42}
_MASK = (1 << 21) - 1

_COUNTED = (CallerJoined, CallAnswered, CallCompleted, CallerAbandoned, CallerGaveUp, QueueSnapshot)
_APPLIED = metrics.counter("hotline_queue_events_applied_total", "Queue events taken into the live queue statistics")


@dataclass(frozen=True)
class QueueFigures:
    """One queue's figures (``queue`` "" for the whole hotline) on local ``day``; see the module for each."""

    queue: str
    day: str
    waiting: int = 0
    longest_wait_seconds: float = 0.0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    gave_up: int = 0
    completed: int = 0
    answered_in_target: int = 0
    service_level: float | None = None
    average_speed_of_answer: float | None = None
    average_handle_time: float | None = None
    connection_rate_24h: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AbandonedCall:
    """A caller who hung up waiting, for the call-back list (``wait_seconds``: the hotline list counts the
    whole wait, a queue's list the wait in that queue)."""

    call_id: str
    queue: str
    caller: str
    ticket: str
    at: float
    wait_seconds: float
    short: bool


class _Keys:
    """Every Redis key of the statistics, under ``{prefix}qs:``."""

    def __init__(self, prefix: str) -> None:
        self.root = prefix + "qs:"
        self.waiting_queues = self.root + "waiting-queues"  # queues that have had callers waiting

    def day(self, day: str, scope: str) -> str:
        return f"{self.root}day:{day}:{scope}"  # hash of the day's counters; scope "" is the hotline

    def queues(self, day: str) -> str:
        return f"{self.root}queues:{day}"  # set of the queues seen that day

    def call(self, call_id: str) -> str:
        # Hash of what was counted for the call: per queue "o:q" offered, "x:q" outcome, "c:q" completed,
        # "w:q" ms waited before giving up; for the hotline "offered", "outcome", "pending" (the day of a
        # give-up a later join takes back); and "caller", "ticket" for the abandoned list.
        return f"{self.root}call:{call_id}"

    def waiting(self, queue: str) -> str:
        return f"{self.root}waiting:{queue}"  # sorted set: call id -> when it joined

    def window(self, scope: str) -> str:
        return f"{self.root}window:{scope}"  # hash: "m{5-min bucket start}", "h{hour start}" -> packed counts

    def abandoned(self, scope: str) -> str:
        return f"{self.root}abandoned:{scope}"  # sorted set by time: JSON of the abandoned call


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _ratio(part: int, whole: int) -> float | None:
    return min(1.0, part / whole) if whole > 0 else None


def _earlier_waits(call: dict[str, str], queue: str) -> int:
    """Milliseconds the call waited in queues it left before this one."""
    return sum(int(v) for f, v in call.items() if f.startswith("w:") and f != "w:" + queue)


def _bucket(at: float) -> int:
    return int(at // BUCKET_SECONDS * BUCKET_SECONDS)


def _window_fields(now: float) -> list[str]:
    """The fields that sum to the window at ``now``: its whole hours, and 5-minute buckets for the rest."""
    current = _bucket(now)
    fields, start = [], current - WINDOW_SECONDS + BUCKET_SECONDS
    while start <= current:
        if start % HOUR == 0 and start + HOUR - BUCKET_SECONDS <= current:
            fields.append(f"h{start}")
            start += HOUR
        else:
            fields.append(f"m{start}")
            start += BUCKET_SECONDS
    return fields


def _figures(queue: str, day: str, counts: dict[str, int], rolled: list[int], waiting, now: float) -> QueueFigures:
    """The figures from a day's counters, the window's sums and (count, oldest join) of the waiting queues."""
    offered, short, answered, completed, in_target = (counts.get(name, 0) for name in (
        "offered", "short_abandoned", "answered", "completed", "answered_in_target"))
    oldest = min((t for n, t in waiting if n), default=now)
    return QueueFigures(
        queue=queue, day=day, waiting=sum(n for n, _ in waiting), longest_wait_seconds=max(0.0, now - oldest),
        offered=offered, answered=answered, abandoned=counts.get("abandoned", 0), short_abandoned=short,
        gave_up=counts.get("gave_up", 0), completed=completed, answered_in_target=in_target,
        service_level=_ratio(in_target, offered - short),
        average_speed_of_answer=counts.get("hold_ms", 0) / answered / 1000 if answered else None,
        average_handle_time=counts.get("talk_ms", 0) / completed / 1000 if completed else None,
        connection_rate_24h=_ratio(rolled[1], rolled[0] - rolled[2]))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _Batch:
    """What one batch of events adds up to, written in round trip 2 with one command per key and field."""

    def __init__(self, keys: _Keys) -> None:
        self.keys = keys
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.window: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.buckets: set[tuple[str, int]] = set()
        self.seen_on: dict[str, set[str]] = defaultdict(set)  # day -> queues
        self.pending: dict[str, str | None] = {}  # call -> day of its give-up in this batch (None: taken back)
        self.lists: set[str] = set()  # abandoned lists added to
        self.waiting_queues: set[str] = set()

    def count(self, day: str, scope: str, field: str, n: int = 1, *, window: tuple[float, str] | None = None):
        self.counts[self.keys.day(day, scope)][field] += n
        if window:
            at, kind = window
            bucket = _bucket(at)
            self.window[scope][f"m{bucket}"] += _PACK[kind]
            self.window[scope][f"h{bucket - bucket % HOUR}"] += _PACK[kind]
            self.buckets.add((scope, bucket))

    def write(self, pipe, kept: int) -> None:
        keys = self.keys
        for key, fields in self.counts.items():
            for field, n in fields.items():
                if n:
                    pipe.hincrby(key, field, n)
            pipe.expire(key, DAY_KEY_TTL)
        for day, queues in self.seen_on.items():
            pipe.sadd(keys.queues(day), *queues)
            pipe.expire(keys.queues(day), DAY_KEY_TTL)
        for scope, fields in self.window.items():
            for field, n in fields.items():
                pipe.hincrby(keys.window(scope), field, n)
            pipe.expire(keys.window(scope), WINDOW_SECONDS + HOUR)
        for scope, bucket in self.buckets:  # the bucket and the hour this one pushes out of the window
            old = bucket - WINDOW_SECONDS
            pipe.hdel(keys.window(scope), f"m{old}", f"h{old - old % HOUR}")
        for scope in self.lists:
            pipe.zremrangebyrank(keys.abandoned(scope), 0, -kept - 1)
        if self.waiting_queues:
            pipe.sadd(keys.waiting_queues, *self.waiting_queues)


class QueueStatistics:
    """The live queue figures of the hotline: Redis keys under ``{prefix}qs:``, and each batch of events
    announced on the channel ``{prefix}changed``."""

    def __init__(self, redis, *, prefix: str, timezone: str = "Asia/Shanghai", service_seconds: int = 15,
                 short_abandon_seconds: int = 5, abandoned_kept: int = 200) -> None:
        if not prefix:
            raise ValueError("the queue statistics need a key prefix of their own, e.g. 'hotline:'")
        if service_seconds < 0 or short_abandon_seconds < 0:
            raise ValueError("service_seconds and short_abandon_seconds cannot be negative")
        if abandoned_kept < 1:
            raise ValueError(f"abandoned_kept must be at least 1, got {abandoned_kept}")
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as Asia/Shanghai)") from None
        self._redis = redis
        self._keys = _Keys(prefix)
        self.channel = f"{prefix}changed"  # each batch's summary is published here (the live wallboard)
        self._service_ms = service_seconds * 1000
        self._short_ms = short_abandon_seconds * 1000
        self._kept = abandoned_kept
        self._today = (0.0, 0.0, "")  # (start, end, ISO date) of the last day looked up: one tuple, thread-safe

    @classmethod
    def from_settings(cls, redis, settings, *, prefix: str) -> QueueStatistics:
        return cls(redis, prefix=prefix, timezone=settings.stats_timezone,
                   service_seconds=settings.stats_service_seconds,
                   short_abandon_seconds=settings.stats_short_abandon_seconds,
                   abandoned_kept=settings.stats_abandoned_kept)

    def _day(self, at: float) -> str:
        start, end, day = self._today
        if not start <= at < end:
            date = datetime.fromtimestamp(at, self._tz).date()
            start = datetime.combine(date, clock_time(), self._tz).timestamp()
            end = datetime.combine(date + timedelta(days=1), clock_time(), self._tz).timestamp()
            day = date.isoformat()
            self._today = (start, end, day)
        return day

    @staticmethod
    def _call_ttl(at: float) -> int:
        return int(min(CALL_KEY_TTL, max(MIN_CALL_KEY_TTL, at + CALL_KEY_TTL - time.time())))

    # -- taking events in ----------------------------------------------------------------------------------

    def apply(self, event: QueueEvent) -> int:
        """Take one event in (see :meth:`apply_many`)."""
        return self.apply_many((event,))

    def apply_many(self, events: Iterable[QueueEvent], *, batch: int = BATCH) -> int:
        """Take events in, in order, ``batch`` at a time; other kinds of event are ignored. Returns how many
        bore on the figures (duplicates included: they are recognised in Redis)."""
        events = iter(events)
        taken = 0
        while chunk := list(islice(events, batch)):
            taken += self._apply(chunk)
        return taken

    def _apply(self, chunk: list) -> int:
        events = [e for e in chunk if isinstance(e, _COUNTED) and e.queue]
        if not events:
            return 0
        # Round trip 1: mark each event counted for its call (HSETNX: only the first sighting wins) and read
        # what round trip 2 needs. Replies come back in the order asked.
        read = self._redis.pipeline(transaction=False)
        asked = [self._ask(read, e) for e in events]
        last_seen: dict[str, float] = {}
        for e in events:
            for call_id, at in ([(c.call_id, c.at) for c in e.callers] if isinstance(e, QueueSnapshot)
                                else [(e.call_id, e.at)]):
                last_seen[call_id] = max(last_seen.get(call_id, 0.0), at)
        for call_id, at in last_seen.items():
            read.expire(self._keys.call(call_id), self._call_ttl(at))
        replies = read.execute()

        # Round trip 2: the waiting callers and the abandoned list in event order, the counters summed over
        # the batch, then the wallboard's message.
        write = self._redis.pipeline(transaction=False)
        batch = _Batch(self._keys)
        i = 0
        for e, n in zip(events, asked):
            self._take(write, batch, e, replies[i:i + n])
            i += n
        batch.write(write, self._kept)
        write.publish(self.channel, json.dumps({"queues": sorted({e.queue for e in events}), "events": len(events)}))
        write.execute()
        _APPLIED.inc(len(events))
        return len(events)

    def _ask(self, read, e) -> int:
        """Queue round trip 1's commands for one event; returns how many replies they give."""
        q = e.queue
        if isinstance(e, QueueSnapshot):
            return sum(self._remember_caller(read, caller) for caller in e.callers)
        call = self._keys.call(e.call_id)
        if isinstance(e, CallerJoined):
            read.hsetnx(call, "o:" + q, 1)
            read.hsetnx(call, "offered", 1)
            read.hmget(call, "x:" + q, "pending")
            return 3 + self._remember_caller(read, e)
        if isinstance(e, (CallAnswered, CallerAbandoned)):
            outcome = "answered" if isinstance(e, CallAnswered) else "abandoned"
            read.hsetnx(call, "x:" + q, outcome)
            read.hsetnx(call, "outcome", outcome)
            read.hgetall(call)
            return 3
        if isinstance(e, CallerGaveUp):
            read.hsetnx(call, "x:" + q, "gave_up")
            read.hget(call, "outcome")
            read.hset(call, "w:" + q, _ms(e.wait_seconds))
            return 3
        read.hsetnx(call, "c:" + q, 1)
        return 1

    def _remember_caller(self, pipe, joined: CallerJoined) -> int:
        """Keep a caller's number and ticket for the abandoned list; returns the replies it adds."""
        info = {name: value for name, value in (("caller", joined.caller), ("ticket", joined.ticket)) if value}
        if info:
            pipe.hset(self._keys.call(joined.call_id), mapping=info)
        return 1 if info else 0

    def _take(self, write, batch: _Batch, e, r: list) -> None:
        """Count one event from its replies of round trip 1."""
        keys, q = self._keys, e.queue
        if isinstance(e, QueueSnapshot):
            write.delete(keys.waiting(q))
            if e.callers:
                write.zadd(keys.waiting(q), {c.call_id: c.at for c in e.callers})
                batch.waiting_queues.add(q)
            return
        day = self._day(e.at)
        batch.seen_on[day].add(q)
        if isinstance(e, CallerJoined):
            queue_new, hotline_new, (ended, gave_up_on) = r[:3]
            if queue_new:
                batch.count(day, q, "offered", window=(e.at, "o"))
            if hotline_new:
                batch.count(day, "", "offered", window=(e.at, "o"))
            gave_up_on = batch.pending[e.call_id] if e.call_id in batch.pending else _text(gave_up_on)
            if queue_new and gave_up_on:  # moved on to another queue: that give-up was not the end
                batch.count(gave_up_on, "", "gave_up", -1)
                write.hdel(keys.call(e.call_id), "pending")
                batch.pending[e.call_id] = None
            if ended is None:
                write.zadd(keys.waiting(q), {e.call_id: e.at})
                batch.waiting_queues.add(q)
            return
        write.zrem(keys.waiting(q), e.call_id)
        if isinstance(e, CallCompleted):
            if r[0]:
                for scope in (q, ""):
                    batch.count(day, scope, "completed")
                    batch.count(day, scope, "talk_ms", _ms(e.talk_seconds))
        elif isinstance(e, CallerGaveUp):
            if r[0]:
                batch.count(day, q, "gave_up")
                if r[1] is None:  # not answered or abandoned in another queue before
                    batch.count(day, "", "gave_up")
                    write.hset(keys.call(e.call_id), "pending", day)
                    write.expire(keys.call(e.call_id), self._call_ttl(e.at))
                    batch.pending[e.call_id] = day
        else:
            call = {_text(f): _text(v) for f, v in r[2].items()}
            own = _ms(e.hold_seconds if isinstance(e, CallAnswered) else e.wait_seconds)
            for scope, new, wait in ((q, r[0], own), ("", r[1], own + _earlier_waits(call, q))):
                if not new:
                    continue
                if isinstance(e, CallAnswered):
                    batch.count(day, scope, "answered", window=(e.at, "a"))
                    batch.count(day, scope, "hold_ms", wait)
                    if wait <= self._service_ms:
                        batch.count(day, scope, "answered_in_target")
                    continue
                short = wait < self._short_ms
                batch.count(day, scope, "abandoned")
                if short:
                    batch.count(day, scope, "short_abandoned", window=(e.at, "s"))
                member = [e.call_id, q, e.caller or call.get("caller", ""), e.ticket or call.get("ticket", ""),
                          float(e.at), wait / 1000, short]
                write.zadd(keys.abandoned(scope), {json.dumps(member, separators=(",", ":")): e.at})
                batch.lists.add(scope)

    # -- reading the figures ---------------------------------------------------------------------------------

    def figures(self, queue: str | None = None, *, now: float | None = None) -> QueueFigures:
        """The figures of ``queue`` (None: the whole hotline) on the local day of ``now`` (default: now)."""
        now = time.time() if now is None else now
        if queue:
            return self._collect([queue], [queue], now)[queue]
        waiting_queues = sorted(_text(q) for q in self._redis.smembers(self._keys.waiting_queues))
        return self._collect([""], waiting_queues, now)[""]

    def all_figures(self, *, now: float | None = None) -> dict[str, QueueFigures]:
        """Every queue seen today or with callers waiting, and the whole hotline under ""."""
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=False)
        pipe.smembers(self._keys.queues(self._day(now)))
        pipe.smembers(self._keys.waiting_queues)
        today, waiting_queues = ({_text(q) for q in members} for members in pipe.execute())
        everything = self._collect(sorted(today | waiting_queues) + [""], sorted(waiting_queues), now)
        return {q: f for q, f in everything.items() if not q or q in today or f.waiting}

    def _collect(self, scopes: list[str], waiting_queues: list[str], now: float) -> dict[str, QueueFigures]:
        keys, day, window = self._keys, self._day(now), _window_fields(now)
        pipe = self._redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.hgetall(keys.day(day, scope))
            pipe.hmget(keys.window(scope), window)
            pipe.hlen(keys.window(scope))
        for queue in waiting_queues:
            pipe.zcard(keys.waiting(queue))
            pipe.zrange(keys.waiting(queue), 0, 0, withscores=True)
        replies = pipe.execute()
        waiting = {}
        base = 3 * len(scopes)
        for j, queue in enumerate(waiting_queues):
            count, oldest = replies[base + 2 * j:base + 2 * j + 2]
            waiting[queue] = (count, oldest[0][1] if oldest else math.inf)
        out, swept = {}, []
        for j, scope in enumerate(scopes):
            rolled = [0, 0, 0]  # offered, answered, short abandons in the window
            for packed in map(int, filter(None, replies[3 * j + 1])):
                rolled[0] += packed & _MASK
                rolled[1] += packed >> 21 & _MASK
                rolled[2] += packed >> 42
            if replies[3 * j + 2] > WINDOW_FIELDS_SWEPT:
                swept.append(scope)
            counts = {_text(f): int(v) for f, v in replies[3 * j].items()}
            out[scope] = _figures(scope, day, counts, rolled, [waiting[scope]] if scope else waiting.values(), now)
        if swept:
            self._sweep(swept, now)
        return out

    def _sweep(self, scopes: list[str], now: float) -> None:
        """Drop the window's buckets and hours that are past for good. Each event already drops the bucket
        24 h before its own; what a quiet spell leaves behind is dropped here."""
        # By the wall clock too: a query about the past must not drop what the present still needs.
        edge = _bucket(min(now, time.time())) - WINDOW_SECONDS
        pipe = self._redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.hkeys(self._keys.window(scope))
        pipe_out = self._redis.pipeline(transaction=False)
        for scope, fields in zip(scopes, pipe.execute()):
            stale = [f for f in map(_text, fields) if int(f[1:]) <= edge]
            if stale:
                pipe_out.hdel(self._keys.window(scope), *stale)
        pipe_out.execute()

    def recent_load(self, queue: str | None = None, *, seconds: int = 1800,
                    now: float | None = None) -> tuple[int, float | None]:
        """(calls offered in the last ``seconds``, rounded up to whole 5-minute buckets; the mean handle
        time of today's completed calls or None): the load Erlang C staffs for."""
        now = time.time() if now is None else now
        current = _bucket(now)
        buckets = max(1, math.ceil(seconds / BUCKET_SECONDS))
        fields = [f"m{current - i * BUCKET_SECONDS}" for i in range(buckets)]
        offered = sum(int(p) & _MASK for p in self._redis.hmget(self._keys.window(queue or ""), fields) if p)
        return offered, self.figures(queue, now=now).average_handle_time

    def abandoned(self, *, queue: str | None = None, limit: int = 50) -> list[AbandonedCall]:
        """The latest abandoned callers, newest first (at most ``abandoned_kept`` are kept)."""
        if limit <= 0:
            return []
        members = self._redis.zrevrange(self._keys.abandoned(queue or ""), 0, limit - 1)
        return [AbandonedCall(*json.loads(m)) for m in members]

    def clear(self) -> None:
        """Forget every figure (before a rebuild)."""
        doomed = []
        for key in self._redis.scan_iter(match=_glob_escape(self._keys.root) + "*", count=1000):
            doomed.append(key)
            if len(doomed) >= 1000:
                self._redis.unlink(*doomed)
                doomed.clear()
        if doomed:
            self._redis.unlink(*doomed)


def rebuild(statistics: QueueStatistics, events: Iterable[QueueEvent], *, batch: int = 1000) -> int:
    """Clear the figures, then take ``events`` in (e.g. ``read_queue_log(path)``). Returns the events read."""
    read = 0

    def counted():
        nonlocal read
        for event in events:
            read += 1
            yield event

    statistics.clear()
    statistics.apply_many(counted(), batch=batch)
    return read
