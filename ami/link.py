"""The AMI link: one logged-in manager session to Asterisk, kept open, behind a synchronous thread-safe API.

The session runs on an asyncio loop in the link's own daemon thread. ``start()`` returns at once; the link
connects, logs in and, whenever the connection drops or the login is refused, tries again after a delay
that doubles from 0.5 s up to ``reconnect_max`` (:func:`reconnect_delays`), until ``close()``.

    link = AmiLink("127.0.0.1", 5038, "hotline", secret, on_event=handle, on_connect=resync)
    link.start()
    link.action("QueuePause", Interface="PJSIP/agent1001", Paused="true", Reason="lunch break")
    link.action_list("QueueStatus")        # the events of the list, up to its ...Complete event

Every action in flight when the connection drops fails at once with :class:`AmiDisconnected`: the caller
decides whether to ask again (an Originate sent twice rings a citizen twice). ``on_event`` runs in the
link's thread, in arrival order, and must be quick (it holds up the answers to actions) and must not send
actions itself; ``on_connect`` runs on a thread of its own after each login, so it may resync with
``action_list("QueueStatus")``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager

from base import metrics

__all__ = ["AmiLink", "AmiEvent", "AmiResponse", "AmiError", "AmiActionFailed", "AmiTimeout", "AmiDisconnected",
           "parse_message", "reconnect_delays"]

log = logging.getLogger("hotline.ami")

_CONNECTED = metrics.gauge("hotline_ami_connected", "AMI links logged in to Asterisk right now")
_RECONNECTS = metrics.counter("hotline_ami_reconnects_total", "AMI logins after a link's first one (it came back)")
_EVENTS = metrics.counter("hotline_ami_events_total", "AMI events received, outside the event lists of actions")
_FAILED = metrics.counter("hotline_ami_actions_failed_total", "AMI actions that failed, by why "
                          "(error: Asterisk refused, timeout, disconnected)", ["reason"])

MAX_MESSAGE_BYTES = 1 << 20  # beyond this a message is discarded: a peer must not grow our buffer forever
FIRST_DELAY = 0.5
STABLE_SECONDS = 10.0  # a session that lasted this long resets the back-off; a flapping one does not


class AmiError(Exception):
    """An AMI action did not succeed."""


class AmiActionFailed(AmiError):
    """Asterisk answered ``Response: Error`` (``message`` is Asterisk's own words)."""

    def __init__(self, message: str, response: "AmiResponse | None" = None):
        super().__init__(message)
        self.message = message
        self.response = response


class AmiTimeout(AmiError):
    """Asterisk did not answer in time."""


class AmiDisconnected(AmiError):
    """The link is not logged in, or the connection dropped before the answer came."""


def reconnect_delays(maximum: float = 30.0, first: float = FIRST_DELAY) -> Iterator[float]:
    """The waits before each new attempt: ``first``, doubling, then ``maximum`` for ever."""
    maximum = max(maximum, first)
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, maximum)


# -- messages ----------------------------------------------------------------------------------------------

# ``ChanVariable(IAX2/10.0.0.1:4569-1): X=y``: the channel in parentheses may itself hold a colon.
_HEADER = re.compile(r"([^\s:()]+(?:\(.*?\))?):(.*)")


@dataclass(frozen=True, slots=True, eq=False)
class _Message:
    headers: dict[str, str]  # first value of each header, as Asterisk spelled its name
    lines: tuple[tuple[str, str], ...] = ()  # every header line, repeats included

    def get(self, key: str, default: str = "") -> str:
        """A header's first value; the name's case does not matter (Asterisk writes both Holdtime and HoldTime)."""
        if key in self.headers:
            return self.headers[key]
        low = key.lower()
        for name, value in self.headers.items():
            if name.lower() == low:
                return value
        return default

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


@dataclass(frozen=True, slots=True, eq=False)
class AmiEvent(_Message):
    """An ``Event:`` message. ``chan_vars`` from ``ChanVariable: NAME=value`` and ``ChanVariable(<channel>):
    NAME=value``; ``dest_chan_vars`` from ``DestChanVariable: NAME=value`` (the second channel)."""

    name: str = ""
    chan_vars: dict[str, str] = field(default_factory=dict)
    dest_chan_vars: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # names only: values may hold a citizen's number
        return f"<AmiEvent {self.name} ({len(self.lines)} headers)>"


@dataclass(frozen=True, slots=True, eq=False)
class AmiResponse(_Message):
    """A ``Response:`` message; ``success`` for Success, Follows and Goodbye."""

    success: bool = False
    message: str = ""

    def __repr__(self) -> str:
        return f"<AmiResponse {self.get('Response')} {self.message!r}>"


def parse_message(text: str) -> AmiEvent | AmiResponse | None:
    """One message (its lines without the blank line) or None when it is neither an event nor a response.

    Unlike panoramisk's ``Message.from_line``, a header with an empty value keeps its name whether or not
    a space follows the colon, and lines without a header are skipped one by one."""
    lines: list[tuple[str, str]] = []
    for line in text.split("\n"):
        match = _HEADER.fullmatch(line.rstrip("\r"))
        if match is None:
            continue
        value = match.group(2)
        lines.append((match.group(1), value[1:] if value.startswith(" ") else value))
    headers: dict[str, str] = {}
    for key, value in lines:
        headers.setdefault(key, value)
    kinds = {key.lower(): key for key, _ in reversed(lines) if key.lower() in ("event", "response")}
    if "event" in kinds:
        chan_vars: dict[str, str] = {}
        dest_vars: dict[str, str] = {}
        for key, value in lines:
            kind = key.partition("(")[0]
            target = chan_vars if kind == "ChanVariable" else dest_vars if kind == "DestChanVariable" else None
            name, sep, var = value.partition("=")
            if target is not None and sep and name:
                target.setdefault(name, var)
        return AmiEvent(headers, tuple(lines), headers[kinds["event"]], chan_vars, dest_vars)
    if "response" in kinds:
        status = headers[kinds["response"]]
        return AmiResponse(headers, tuple(lines), status in ("Success", "Follows", "Goodbye"),
                           headers.get("Message", ""))
    return None


def _wire_value(value: object) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if "\r" in text or "\n" in text:
        raise ValueError("an AMI header value cannot hold a line break")
    return text


def _wire_headers(name: str, headers: dict[str, object], action_id: str) -> dict[str, str | list[str]]:
    """The action's headers as panoramisk's Action writes them; refuses what would forge another header."""
    out: dict[str, str | list[str]] = {"Action": _wire_value(name)}
    for key, value in headers.items():
        if value is None:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", key) or key.lower() == "action":
            raise ValueError(f"not an AMI header name: {key!r}")
        out[key] = [_wire_value(v) for v in value] if isinstance(value, (list, tuple)) else _wire_value(value)
    if not any(key.lower() == "actionid" for key in out):
        out["ActionID"] = action_id
    return out


# -- panoramisk, with the gaps filled -------------------------------------------------------------------------

class _Action(Action):
    """panoramisk's Action (ActionID, wire form, one line per list item) with completion rules of our own.

    panoramisk guesses a multi-message answer from the text ("Added interface to queue" and "Originate
    successfully queued" make it wait for messages that never come). Here an action is done at its
    Response, a list action at its ``...Complete`` event, and a refused one at its Error."""

    def __init__(self, headers: dict, as_list: bool):
        super().__init__(headers, as_list=as_list)  # makes a Future: must run on the loop's own thread
        self.answer: AmiResponse | None = None
        self.events: list[AmiEvent] = []

    @property
    def name(self) -> str:
        return self["Action"]

    def add_message(self, message: AmiEvent | AmiResponse) -> bool:
        """Take one message of the answer; True when the action is complete."""
        if self.future.done():
            return True
        if isinstance(message, AmiResponse):
            if self.answer is not None:
                return False
            self.answer = message
            if message.success and self.as_list:
                return False
            self.future.set_result(message)
            return True
        if message.name.endswith("Complete") or message.get("EventList").lower() == "complete":
            self.future.set_result(self.events)
            return True
        self.events.append(message)
        return False


class _Protocol(AMIProtocol):
    """Framing with a bounded buffer, whole messages decoded as UTF-8 (panoramisk decodes each TCP chunk
    with errors ignored, losing a Chinese name split across two reads), our parser, and in-flight actions
    failed, not queued for resending, when the connection ends."""

    _SEPARATOR = re.compile(rb"\r?\n\r?\n")

    def __init__(self, manager: "_Manager"):
        super().__init__()
        self.manager = manager

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.factory = self.manager
        self.log = log
        self.lost: asyncio.Future = self.manager.loop.create_future()
        self._buffer = bytearray()
        self._skipping = False

    def send(self, action: _Action, as_list: bool = False) -> asyncio.Future:
        if action.id in self.responses:
            raise ValueError(f"ActionID {action.id!r} is already in flight")
        self.responses[action.id] = action
        self.transport.write(str(action).encode("utf-8"))
        return action.future

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        start = max(0, len(buf) - 3)
        buf += data
        if self.version is None:
            end = buf.find(b"\n")
            if end < 0 and len(buf) < 256:
                return
            first = bytes(buf[:max(end, 0)]).rstrip(b"\r")
            if first.startswith(b"Asterisk Call Manager/"):
                self.version = first.partition(b"/")[2].decode("ascii", "replace")
                del buf[:end + 1]
            else:
                self.version = ""
            start = 0
        pos = 0
        while (match := self._SEPARATOR.search(buf, start)) is not None:
            chunk = bytes(buf[pos:match.start()])
            pos = start = match.end()
            if self._skipping:
                self._skipping = False
            elif chunk.strip():
                self._message(chunk)
        if pos:
            del buf[:pos]
        if len(buf) > MAX_MESSAGE_BYTES:
            log.warning("AMI: discarded a message longer than %d bytes", MAX_MESSAGE_BYTES)
            del buf[:-3]
            self._skipping = True

    def _message(self, chunk: bytes) -> None:
        try:
            message = parse_message(chunk.decode("utf-8", "replace"))
            if message is None:
                log.debug("AMI: skipped %d bytes that are neither an event nor a response", len(chunk))
            else:
                self.manager.handle(self, message)
        except Exception:  # a bug of ours must not cut Asterisk off
            log.exception("AMI: could not handle a message")

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.fail_in_flight()
        if not self.lost.done():
            self.lost.set_result(exc)

    def fail_in_flight(self) -> None:
        actions, self.responses = list(self.responses.values()), {}
        for action in actions:
            if not action.future.done():
                action.future.set_exception(AmiDisconnected(f"the AMI connection dropped before the answer "
                                                            f"to {action.name}"))

    def close(self) -> None:
        self.fail_in_flight()
        if not self.closed:
            self.closed = True
            self.transport.close()


class _Manager(Manager):
    """panoramisk's Manager with its lifecycle replaced: connect, log in, wait for the end, back off, again.

    panoramisk reconnects after a fixed ``int()`` of a delay (0.5 s becomes 0: a hot loop), leaves a
    refused login connected and silent, and resends unanswered actions after the next FullyBooted."""

    def __init__(self, link: "AmiLink", loop: asyncio.AbstractEventLoop):
        super().__init__(host=link.host, port=link.port, username=link.username, secret=link._secret,
                         events="on" if link.events else "off", loop=loop, log=log)
        self.link = link

    async def run(self) -> None:
        link = self.link
        delays = reconnect_delays(link.reconnect_max)
        while not link._closed:
            started = self.loop.time()
            try:
                logged_in, why, level = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("AMI link to %s:%d: unexpected error", link.host, link.port)
                logged_in, why, level = False, "unexpected error", logging.ERROR
            if logged_in and self.loop.time() - started >= STABLE_SECONDS:
                delays = reconnect_delays(link.reconnect_max)
            delay = next(delays)
            link.waits.append(delay)
            log.log(level, "AMI link to %s:%d: %s; trying again in %.1f s", link.host, link.port, why, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> tuple[bool, str, int]:
        link = self.link
        # asyncio.wait, not wait_for, here and in request(): Python 3.11's wait_for swallows a cancellation
        # (close()) that lands as the awaited thing completes, and the link would then live on.
        connecting = self.loop.create_task(
            self.loop.create_connection(lambda: _Protocol(self), link.host, link.port))
        try:
            await asyncio.wait({connecting}, timeout=link.action_timeout)
        except asyncio.CancelledError:
            connecting.cancel()
            if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
                connecting.result()[0].close()
            raise
        if not connecting.done():
            connecting.cancel()
            return False, "cannot connect (timed out)", logging.WARNING
        try:
            _transport, protocol = connecting.result()
        except OSError as exc:
            return False, f"cannot connect ({exc})", logging.WARNING
        self.protocol = protocol
        try:
            login = {"Action": "Login", "Username": link.username, "Secret": link._secret,
                     "Events": "on" if link.events else "off", "ActionID": link._next_id()}
            try:
                await self.request(login, False, link.action_timeout, login=True)
            except AmiActionFailed as exc:
                return False, (f"login refused for user {link.username!r}: {exc.message or 'no reason given'} "
                               f"(check the AMI username and secret)"), logging.ERROR
            except AmiError as exc:
                return False, f"no answer to Login ({exc})", logging.WARNING
            self.authenticated = True
            link._logged_in(protocol.version)
            keepalive = self.loop.create_task(self._keepalive(protocol))
            try:
                await protocol.lost
            finally:
                keepalive.cancel()
                self.authenticated = False
                link._logged_out()
            return True, "connection lost", logging.WARNING
        finally:
            protocol.close()
            self.protocol = None

    async def _keepalive(self, protocol: _Protocol) -> None:
        """A Ping now and then: a connection whose peer vanished (no FIN) is otherwise never noticed."""
        while True:
            await asyncio.sleep(self.link.keepalive_seconds)
            try:
                await self.request({"Action": "Ping", "ActionID": self.link._next_id()}, False,
                                   self.link.action_timeout)
            except AmiTimeout:
                log.warning("AMI: no answer to Ping; dropping the connection")
                protocol.transport.abort()
                return
            except AmiDisconnected:
                return
            except AmiError:
                pass

    async def request(self, headers: dict, as_list: bool, timeout: float, *, login: bool = False):
        protocol = self.protocol
        if protocol is None or protocol.closed or not (self.authenticated or login):
            raise AmiDisconnected(f"the AMI link to {self.link.host}:{self.link.port} is not connected")
        action = _Action(headers, as_list)
        protocol.send(action)
        try:
            await asyncio.wait({action.future}, timeout=timeout)
        finally:
            if protocol.responses.get(action.id) is action:
                del protocol.responses[action.id]
        if not action.future.done():
            action.future.cancel()
            raise AmiTimeout(f"Asterisk did not answer {action.name} within {timeout:g} s")
        answer = action.future.result()
        if isinstance(answer, AmiResponse) and not answer.success:
            raise AmiActionFailed(answer.message or answer.get("Response"), answer)
        return answer

    def handle(self, protocol: _Protocol, message: AmiEvent | AmiResponse) -> None:
        action = protocol.responses.get(message.action_id) if message.action_id else None
        if isinstance(message, AmiResponse):
            if action is None:
                log.debug("AMI: a response to no action in flight (answered after its timeout?)")
            elif action.add_message(message):
                protocol.responses.pop(action.id, None)
        elif action is not None and action.as_list:
            if action.add_message(message):
                protocol.responses.pop(action.id, None)
        else:
            self.dispatch(message)

    def dispatch(self, event: AmiEvent) -> None:
        _EVENTS.inc()
        if event.name == "Shutdown":
            log.warning("AMI: Asterisk is shutting down")
        if self.link.on_event is not None:
            try:
                self.link.on_event(event)
            except Exception:
                log.exception("AMI: the handler of a %s event failed", event.name)

    def connect(self, *args, **kwargs):  # panoramisk's: fixed delay, asyncio.Task(loop=) from any thread
        raise NotImplementedError("the AMI link connects through run()")

    def connection_lost(self, exc) -> None:  # panoramisk's schedules its own reconnect; run() does it here
        pass


# -- the synchronous face -------------------------------------------------------------------------------------

class AmiLink:
    """One AMI session kept open from a daemon thread; every method may be called from any other thread.

    ``logins`` counts the logins so far, ``waits`` the last back-off delays waited (newest last)."""

    keepalive_seconds = 20.0  # an idle link Pings this often and drops a connection whose Ping goes unanswered

    def __init__(self, host: str, port: int, username: str, secret: str, *, events: bool = True,
                 action_timeout: float = 5.0, reconnect_max: float = 30.0,
                 on_event: Callable[[AmiEvent], None] | None = None,
                 on_connect: Callable[["AmiLink"], None] | None = None):
        self.host, self.port, self.username = host, port, username
        self._secret = secret
        self.events = events
        self.action_timeout = action_timeout
        self.reconnect_max = reconnect_max
        self.on_event = on_event
        self.on_connect = on_connect
        self.waits: collections.deque[float] = collections.deque(maxlen=32)  # the back-off delays waited
        self.logins = 0
        self._ids = itertools.count(1)
        self._id_prefix = f"hl-{uuid.uuid4().hex[:8]}"
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self._manager: _Manager | None = None
        self._closed = False

    def __repr__(self) -> str:  # never the secret
        return f"<AmiLink {self.username}@{self.host}:{self.port} {'up' if self.connected else 'down'}>"

    def start(self) -> "AmiLink":
        """Connect in the background (and reconnect by itself until ``close()``); returns at once."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this AMI link was closed; make a new one")
            if self._thread is not None:
                return self
            self._loop = asyncio.new_event_loop()
            self._manager = _Manager(self, self._loop)
            self._thread = threading.Thread(target=self._run, name=f"ami-link-{self.host}:{self.port}",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._task = loop.create_task(self._manager.run())
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # lets the closed transport's callbacks run
            loop.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        """Close the connection, stop reconnecting and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(lambda: self._task is not None and self._task.cancel())
        except RuntimeError:  # the loop already ended
            pass
        if thread is not threading.current_thread():
            thread.join(timeout=10.0)

    def action(self, name: str, **headers: object) -> AmiResponse:
        """Send one action and return Asterisk's response. A list value sends the header once per item.

        Raises AmiActionFailed (``Response: Error``), AmiTimeout, AmiDisconnected, ValueError (a header
        that cannot be sent)."""
        return self._call(name, headers, as_list=False)

    def action_list(self, name: str, **headers: object) -> list[AmiEvent]:
        """Send a list action (QueueStatus, QueueSummary) and return its events up to the ``...Complete``."""
        return self._call(name, headers, as_list=True)

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _call(self, name: str, headers: dict, as_list: bool):
        wire = _wire_headers(name, headers, self._next_id())
        if threading.current_thread() is self._thread:
            raise RuntimeError("an AMI action cannot be sent from the link's own thread (on_event): it would "
                               "wait for itself")
        try:
            if not self.connected or self._loop is None:
                raise AmiDisconnected(f"the AMI link to {self.host}:{self.port} is not connected")
            coro = self._manager.request(wire, as_list, self.action_timeout)
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            except RuntimeError:  # the loop was closed meanwhile
                coro.close()
                raise AmiDisconnected(f"the AMI link to {self.host}:{self.port} is closed") from None
            try:
                return future.result(self.action_timeout + 5.0)
            except concurrent.futures.CancelledError:
                raise AmiDisconnected(f"the AMI link to {self.host}:{self.port} was closed") from None
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise AmiTimeout(f"Asterisk did not answer {name} within {self.action_timeout:g} s") from None
        except AmiError as exc:
            reason = ("error" if isinstance(exc, AmiActionFailed) else
                      "timeout" if isinstance(exc, AmiTimeout) else "disconnected")
            _FAILED.labels(reason).inc()
            raise

    # -- called on the loop's thread --

    def _logged_in(self, version: str | None) -> None:
        if self.logins:
            _RECONNECTS.inc()
        self.logins += 1
        _CONNECTED.inc()
        self._connected.set()
        log.info("AMI link logged in to %s:%d as %r (Asterisk Call Manager %s, events %s)", self.host, self.port,
                 self.username, version or "?", "on" if self.events else "off")
        if self.on_connect is not None:
            threading.Thread(target=self._run_on_connect, name="ami-on-connect", daemon=True).start()

    def _logged_out(self) -> None:
        self._connected.clear()
        _CONNECTED.dec()

    def _run_on_connect(self) -> None:
        try:
            self.on_connect(self)
        except Exception:
            log.exception("AMI: the on_connect handler failed")
