"""Asterisk's queue_log read into queue events (``queues.events``), so figures can be rebuilt after a restart.

A line is ``epoch|callid|queue|agent|EVENT|data1|data2|...``. The agent field holds the MemberName for call
and pause events but the Interface for ADDMEMBER, REMOVEMEMBER, PENALTY and PAUSEALL / UNPAUSEALL; "NONE"
stands for no value. The data fields, as app_queue writes them:

    ENTERQUEUE      url|callerid|position
    CONNECT         holdtime|bridged uniqueid|ringtime
    COMPLETECALLER  holdtime|talktime|origposition        (COMPLETEAGENT the same)
    TRANSFER        exten|context|holdtime|talktime|origposition   (BLINDTRANSFER the same; ATTENDEDTRANSFER
                    has its own fields first: the last three are always holdtime|talktime|origposition)
    ABANDON         position|origposition|waittime
    EXITWITHTIMEOUT position|origposition|waittime        (EXITEMPTY the same; EXITWITHKEY key|...)
    RINGNOANSWER    ringtime in milliseconds
    ADDMEMBER       "PAUSED" or nothing;  PAUSE / UNPAUSE / PAUSEALL / UNPAUSEALL  reason

Other events (QUEUESTART, RINGCANCELED, PENALTY, CONFIGRELOAD, ...) give nothing. A malformed line gives
nothing either and is counted by :class:`QueueLogReader`; reading never raises on the file's content.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from queues.events import (
    AgentMissed,
    CallAnswered,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
    QueueEvent,
)

__all__ = ["QueueLogReader", "parse_line", "read_queue_log"]

log = logging.getLogger(__name__)


class _Malformed(ValueError):
    """A queue_log line that cannot be what Asterisk writes."""


_TICKET = re.compile(r"[0-9A-Za-z-]{1,32}")  # a ticket number as the dialplan passes it

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Malformed("not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _Malformed("not a time")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Malformed("not a whole number") from None


def _field(value: str) -> str:
    return "" if value == "NONE" else value


def _data(data: list[str], least: int) -> list[str]:
    if len(data) < least:
        raise _Malformed("too few fields")
    return data


def _joined(at, queue, call_id, agent, data):
    if len(data) >= 3:  # the dialplan passes the ticket as Queue()'s URL argument: it is the first field
        ticket = data[0] if _TICKET.fullmatch(data[0]) else ""
        return CallerJoined(at, queue, call_id, data[-2], _whole(data[-1]) if data[-1] else 0, ticket)
    return CallerJoined(at, queue, call_id, _data(data, 2)[1])  # before Asterisk 1.6: no position


def _answered(at, queue, call_id, agent, data):
    _data(data, 1)
    ring = _seconds(data[2]) if len(data) > 2 and data[2] else 0.0
    return CallAnswered(at, queue, call_id, agent, _seconds(data[0]), ring)


def _completed(ended_by: str):
    def event(at, queue, call_id, agent, data):
        hold, talk = _data(data, 3)[-3:-1]
        return CallCompleted(at, queue, call_id, agent, _seconds(hold), _seconds(talk), ended_by)
    return event


def _abandoned(at, queue, call_id, agent, data):
    position, original, wait = _data(data, 3)[-3:]
    return CallerAbandoned(at, queue, call_id, _seconds(wait), _whole(position), _whole(original))


def _gave_up(why: str):
    def event(at, queue, call_id, agent, data):
        return CallerGaveUp(at, queue, call_id, _seconds(_data(data, 3)[-1]), why)
    return event


def _missed(at, queue, call_id, agent, data):
    return AgentMissed(at, queue, call_id, agent, _seconds(_data(data, 1)[0]) / 1000)


def _paused(paused: bool, *, everywhere: bool = False):
    def event(at, queue, call_id, agent, data):
        reason = "|".join(data)
        if everywhere:  # PAUSEALL names the device, in no queue
            return MemberPaused(at, "", "", paused, reason, interface=agent)
        return MemberPaused(at, queue, agent, paused, reason)
    return event


_CALL_EVENTS: dict[str, Callable] = {
    "ENTERQUEUE": _joined,
    "CONNECT": _answered,
    "COMPLETECALLER": _completed("caller"),
    "COMPLETEAGENT": _completed("agent"),
    "TRANSFER": _completed("transfer"),
    "BLINDTRANSFER": _completed("transfer"),
    "ATTENDEDTRANSFER": _completed("transfer"),
    "ABANDON": _abandoned,
    "EXITWITHTIMEOUT": _gave_up("timeout"),
    "EXITEMPTY": _gave_up("empty"),
    "EXITWITHKEY": _gave_up("key"),
    "RINGNOANSWER": _missed,
}
_MEMBER_EVENTS: dict[str, Callable] = {
    "ADDMEMBER": lambda at, queue, _, agent, data: MemberAdded(at, queue, agent, paused=data[:1] == ["PAUSED"]),
    "REMOVEMEMBER": lambda at, queue, _, agent, data: MemberRemoved(at, queue, agent),
    "PAUSE": _paused(True),
    "UNPAUSE": _paused(False),
}
_DEVICE_EVENTS: dict[str, Callable] = {"PAUSEALL": _paused(True, everywhere=True),
                                       "UNPAUSEALL": _paused(False, everywhere=True)}


def _parse(line: str) -> list[QueueEvent]:
    """The events of one line; raises _Malformed."""
    fields = line.rstrip("\r\n").split("|")
    if len(fields) < 5:
        raise _Malformed("fewer than five fields")
    at = _seconds(fields[0])
    call_id, queue, agent, name, data = _field(fields[1]), _field(fields[2]), _field(fields[3]), fields[4], fields[5:]
    if name in _DEVICE_EVENTS:
        if not agent:
            raise _Malformed("no device")
        return [_DEVICE_EVENTS[name](at, queue, call_id, agent, data)]
    build = _CALL_EVENTS.get(name)
    if build is not None:
        if not call_id or not queue:
            raise _Malformed("a call event without its call or queue")
    else:
        build = _MEMBER_EVENTS.get(name)
        if build is None:
            return []
        if not queue or not agent:
            raise _Malformed("a member event without its queue or member")
    return [build(at, queue, call_id, agent, data)]


def parse_line(line: str) -> list[QueueEvent]:
    """The queue events one queue_log line stands for: [] for other events and for malformed lines."""
    try:
        return _parse(line)
    except _Malformed:
        return []


class QueueLogReader:
    """The events of a queue_log, in file order; ``skipped`` counts the malformed lines, ``lines`` all of them.

    ``source`` is a path (read as UTF-8, undecodable bytes replaced) or any iterable of lines. Blank lines
    and ``#`` lines (the recorded fixtures' headers) pass silently.
    """

    def __init__(self, source: str | os.PathLike | Iterable[str]) -> None:
        self.skipped = 0
        self.lines = 0
        self._events = self._read(source)

    def __iter__(self) -> Iterator[QueueEvent]:
        return self

    def __next__(self) -> QueueEvent:
        return next(self._events)

    def _read(self, source) -> Iterator[QueueEvent]:
        if isinstance(source, (str, os.PathLike)):
            with Path(source).open(encoding="utf-8", errors="replace") as lines:
                yield from self._parse_all(lines)
        else:
            yield from self._parse_all(source)

    def _parse_all(self, lines: Iterable[str]) -> Iterator[QueueEvent]:
        for line in lines:
            self.lines += 1
            if not line.strip() or line.startswith("#"):
                continue
            try:
                yield from _parse(line)
            except _Malformed as exc:
                self.skipped += 1
                if self.skipped <= 10:  # the line number only: the line may hold a caller's number
                    log.warning("queue_log line %d skipped: %s", self.lines, exc)


def read_queue_log(source: str | os.PathLike | Iterable[str]) -> QueueLogReader:
    """Iterate the events of a queue_log file (or lines); the reader's ``skipped`` counts malformed lines."""
    return QueueLogReader(source)
