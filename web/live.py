"""Live pages over server-sent events: ONE Redis pub/sub listener per web process, fanning out to the streams.

The queue watch publishes on two channels: ``{prefix}changed`` after each batch of queue figures
(``queues.statistics``) and ``{prefix}agents`` after each agent's change (``queues.presence``). A
:class:`LiveHub` subscribes to both on one connection, in one thread, started with the first stream; each open
stream gets an :class:`Inbox` the hub drops the messages it wants into. No stream ever holds a Redis connection.

* A stream lives ``stream_seconds`` (a revoked token or a changed role is seen at the next connect), then ends;
  the browser's EventSource connects again by itself after the ``retry:`` the stream sent first.
* At most ``max_streams`` at once: each holds a waitress thread while open (the server runs ``web_threads +
  web_live_streams``). Beyond it, :class:`StreamsFull` (the API answers 503, the pages poll the JSON API).
* When Redis goes away, the listener tries again with a growing pause; streams keep sending heartbeats, and
  after it comes back every stream is told to ``resync`` (messages sent meanwhile were lost).
* :meth:`LiveHub.close` ends every stream and the listener (the server's shutdown).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator

import redis

__all__ = ["FIGURES", "AGENTS", "RESYNC", "LiveHub", "Inbox", "StreamsFull", "event", "event_stream"]

log = logging.getLogger(__name__)

FIGURES, AGENTS, RESYNC = "figures", "agents", "resync"  # what a message is about
RETRY_MS = 3000  # the browser reconnects this long after a stream ends
INBOX_KEPT = 256  # a stream that falls this far behind loses its oldest messages (each one re-reads state)
RECONNECT_MAX = 10.0


class StreamsFull(RuntimeError):
    """No live stream can be opened now: the cap is reached, or the server is shutting down."""


class Inbox:
    """What the hub has for one open stream and the stream has not yet read."""

    def __init__(self, hub: LiveHub, kinds: frozenset[str], agent: str | None) -> None:
        self.kinds = kinds
        self.agent = agent  # only this agent's AGENTS messages (None: every agent's)
        self._hub = hub
        self._items: deque = deque(maxlen=INBOX_KEPT)
        self._ready = threading.Condition()
        self.closed = False

    def offer(self, kind: str, message: dict | None) -> None:
        if kind != RESYNC and (kind not in self.kinds or (
                kind == AGENTS and self.agent is not None and message.get("code") != self.agent)):
            return
        with self._ready:
            self._items.append((kind, message))
            self._ready.notify()

    def take(self, timeout: float) -> list[tuple[str, dict | None]]:
        """The messages waiting, after at most ``timeout`` seconds for the first; [] when none came or closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self.closed or self._hub.closing, max(0.0, timeout))
            items = list(self._items)
            self._items.clear()
            return items

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def close(self) -> None:
        """Give the stream's place back (idempotent; called when the response closes, however it ends)."""
        with self._ready:
            if self.closed:
                return
            self.closed = True
            self._ready.notify_all()
        self._hub._release(self)


class LiveHub:
    """The process's one Redis subscriber and the open streams it feeds."""

    def __init__(self, redis_client, *, figures_channel: str, agents_channel: str, max_streams: int,
                 stream_seconds: float = 300.0, heartbeat_seconds: float = 15.0, ping_seconds: float = 15.0) -> None:
        self._redis = redis_client
        self._channels = {figures_channel: FIGURES, agents_channel: AGENTS}
        self.max_streams = max_streams
        self.stream_seconds = stream_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.ping_seconds = ping_seconds
        self.version = 0  # counts the messages heard: a cached document is good while it is unchanged
        self.connected = False
        self._inboxes: set[Inbox] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._builds: dict[str, threading.Lock] = {}
        self._built: dict[str, tuple[int, float, object]] = {}

    @property
    def open_streams(self) -> int:
        return len(self._inboxes)

    def open(self, kinds: Iterable[str], agent: str | None = None) -> Inbox:
        """A place for a new stream; :class:`StreamsFull` when there is none. Starts the listener if need be."""
        with self._lock:
            if self._stopping.is_set():
                raise StreamsFull("the server is shutting down")
            if len(self._inboxes) >= self.max_streams:
                raise StreamsFull(f"{self.max_streams} live streams are open already")
            inbox = Inbox(self, frozenset(kinds), agent)
            self._inboxes.add(inbox)
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="live-hub", daemon=True)
                self._thread.start()
        return inbox

    def _release(self, inbox: Inbox) -> None:
        with self._lock:
            self._inboxes.discard(inbox)

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the hub closes first; True when it is closing."""
        return self._stopping.wait(seconds)

    @property
    def closing(self) -> bool:
        return self._stopping.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """End every stream and the listener."""
        self._stopping.set()
        with self._lock:
            inboxes, thread = list(self._inboxes), self._thread
        for inbox in inboxes:
            inbox.wake()
        if thread is not None:
            thread.join(timeout)

    def latest(self, name: str, build: Callable[[], object], max_age: float):
        """``build()``'s value, built again only after a message came or ``max_age`` seconds passed: the
        streams of one page share one build per change."""
        with self._lock:
            lock = self._builds.setdefault(name, threading.Lock())
        with lock:
            version, built_at, value = self._built.get(name, (-1, 0.0, None))
            if version != self.version or time.monotonic() - built_at > max_age:
                version, value = self.version, build()
                self._built[name] = (version, time.monotonic(), value)
            return value

    def _fan_out(self, kind: str, message: dict | None) -> None:
        self.version += 1
        with self._lock:
            inboxes = list(self._inboxes)
        for inbox in inboxes:
            inbox.offer(kind, message)

    # -- the listener thread ------------------------------------------------------------------------------

    def _listen(self) -> None:
        delay, heard_before = 0.5, False
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(*self._channels)
                self.connected, delay = True, 0.5
                if heard_before:
                    log.info("live pages: Redis is back", extra={"event": "web.live.reconnected"})
                    self._fan_out(RESYNC, None)  # what was published meanwhile is lost: read it all again
                heard_before = True
                self._relay(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self.connected or delay == 0.5:
                    log.warning("live pages: Redis unreachable (%s); trying again", type(exc).__name__,
                                extra={"event": "web.live.redis_lost"})
                self.connected = False
                self._stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
        self.connected = False

    def _relay(self, pubsub) -> None:
        heard = pinged = time.monotonic()
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                heard = now
                kind = self._channels.get(_text(message.get("channel")))
                if message["type"] == "message" and kind is not None:
                    self._fan_out(kind, _decode(message["data"]))
            elif now - heard > 2 * self.ping_seconds + 5:
                raise redis.ConnectionError("no answer to PING")  # a link that died without a word
            elif now - heard > self.ping_seconds and now - pinged > self.ping_seconds:
                pubsub.ping()  # its PONG counts as heard
                pinged = now


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _decode(data) -> dict:
    try:
        message = json.loads(data)
    except (TypeError, ValueError):
        return {}
    return message if isinstance(message, dict) else {}


# --- the wire ----------------------------------------------------------------------------------------------

def event(name: str, data) -> str:
    """One server-sent event: its name and its data as one line of JSON."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


HEARTBEAT = ": keep-alive\n\n"


def event_stream(hub: LiveHub, inbox: Inbox, *, opening: Callable[[], str],
                 turn: Callable[[list], str], idle: Callable[[], str] = lambda: HEARTBEAT,
                 settle: float = 0.0) -> Iterator[str]:
    """The body of a stream: ``retry:`` and ``opening()``, then what ``turn(messages)`` makes of each batch the
    inbox gets (no sooner than ``settle`` seconds after the last, so a burst of events is one update), and
    ``idle()`` (a heartbeat comment by default) after ``heartbeat_seconds`` of silence; until the stream's life
    is over or the hub closes."""
    try:
        yield f"retry: {RETRY_MS}\n\n" + opening()
        end = time.monotonic() + hub.stream_seconds
        last_sent = last_turn = time.monotonic()
        while not hub.closing and not inbox.closed:
            now = time.monotonic()
            if now >= end:
                return
            messages = inbox.take(min(end - now, last_sent + hub.heartbeat_seconds - now))
            if hub.closing or inbox.closed:
                return
            if messages:
                gap = last_turn + settle - time.monotonic()
                if gap > 0 and not hub.pause(gap):
                    messages += inbox.take(0)
                chunk = turn(messages)
                last_turn = time.monotonic()
            elif time.monotonic() - last_sent >= hub.heartbeat_seconds:
                chunk = idle()
            else:
                continue
            if chunk:
                yield chunk
                last_sent = time.monotonic()
    finally:
        inbox.close()
