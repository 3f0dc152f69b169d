"""The FastAGI server: accepts Asterisk's connections and runs one handler per session.

A connection goes through two stages:

* Until its ``agi_*`` block is complete it is held by the accept loop (one thread, a selector), not by
  a thread of its own, and the whole block must arrive within ``read_timeout``. Connections that never
  finish their block cost a buffer each, not a thread: with a thread blocked on each, thousands of them
  closing at once woke thousands of threads, whose fight for the interpreter lock kept the accept loop
  from the next call for seconds (bench/agi_idle_storm.py).
* With its block in hand, a session runs its handler in its own thread. Each read waits at most
  min(``read_timeout``, the time left of ``session_timeout``) for a whole line, however slowly its
  bytes trickle in, because Asterisk has neither limit.

A connection is closed at once without a word -- Asterisk reports AGISTATUS=SUCCESS with no variables
set, and the dialplan's fallback queues the caller within milliseconds -- when its source address is
not in ``allowed_hosts``, beyond ``max_sessions`` connections, and while the process is saturated.

Saturation. One process runs one thread's Python code at a time. A session waiting on Asterisk costs a
blocked thread and nothing more; a *busy* session, running handler code between Asterisk's reply and
its next command, needs the interpreter, and each one makes every other reply wait longer. So admission
bounds busy sessions rather than sessions: a new session starts only while fewer than ``max_busy`` are
busy, and counts as busy from its start to its first command, so a burst of arrivals is counted as it
lands, not after it has slowed everyone. The count is exact and immediate, where a measured reply delay
would lag behind the surge it should stop and need smoothing and tuning. Sessions already admitted are
never cut off. What a handler does after handing the call back (``release()``, e.g. saving the ticket)
counts as busy too: it needs the same interpreter as the replies of the calls still in the IVR.

Running out of file descriptors (EMFILE, ENFILE) pauses accepting for a moment instead of ending the
process with its calls; connections wait in the backlog, or a sibling process sharing the listening
socket (``bind_listener``) takes them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import selectors
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Iterable

from asterisk import agi as pyst

from agi_scripts.channel import (
    AsteriskSilent,
    ConnectionClosed,
    HotlineAGI,
    LineTransport,
    SessionExpired,
)
from agi_scripts.protocol import AGIProtocolError, EnvironmentBlock
from agi_scripts.registry import HandlerRegistry
from base import metrics

log = logging.getLogger("hotline.agi")

_SESSIONS = metrics.counter("hotline_agi_sessions_total", "FastAGI sessions by request name and outcome",
                            ["script", "outcome"])
_ACTIVE = metrics.gauge("hotline_agi_sessions_active", "FastAGI sessions in progress")
_REJECTED = metrics.counter("hotline_agi_sessions_rejected_total",
                            "Connections closed at once because max_sessions was reached")
_DURATION = metrics.histogram("hotline_agi_session_seconds", "Length of FastAGI sessions",
                              buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900))
_SHED = metrics.counter("hotline_agi_sessions_shed_total",
                        "Connections closed at once because max_busy sessions were running handler code")
_REFUSED = metrics.counter("hotline_agi_connections_refused_total",
                           "Connections closed at once because their source address is not in agi_allowed_hosts")
_BUSY = metrics.gauge("hotline_agi_sessions_busy",
                      "FastAGI sessions running handler code now, not waiting on Asterisk (see agi_max_busy)")
_ACCEPT_FAILED = metrics.counter("hotline_agi_accept_failures_total",
                                 "accept() calls that failed for want of file descriptors or memory, by error",
                                 ["error"])

#: Where Asterisk may connect from unless told otherwise: this machine only.
LOOPBACK = ("127.0.0.0/8", "::1")

# accept() errors that mean this process is out of descriptors or memory: pause accepting, keep serving.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The connection died between the handshake and accept(), or a firewall refused it: take the next one
# (Linux reports the new socket's pending network errors from accept(), see accept(2)).
_GONE = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH") if hasattr(errno, name))
_ACCEPT_PAUSE = 0.1  # seconds without accept() after running out of descriptors
_ACCEPT_BATCH = 256  # accepts per wake-up, so a flood cannot starve the connections already held
_POLL = 0.2  # the longest the accept loop sleeps: how soon it sees a stop request
_ALLOWED_CACHE = 4096  # addresses whose allow-list verdict is remembered
_LOG_EVERY = 5.0  # seconds between two log lines about turned-away connections (the metrics count all)


class ListenError(OSError):
    """The FastAGI server cannot listen on its address."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class PortInUse(ListenError):
    """Another socket already listens on the FastAGI address (another server, or another program)."""


def allowed_networks(entries: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network]
                     ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """IPs and CIDR networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``) as networks; ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(f"allowed host {str(entry)!r} is not an IP address or CIDR network: {exc}") from None
    return tuple(networks)


def bind_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """The FastAGI listening socket. Bind it once, in the parent, and give it to every server process.

    There is no SO_REUSEPORT: a second server on an address in use is refused (:class:`PortInUse`)
    instead of silently taking a share of the calls. SO_REUSEADDR only lets a restarted server bind
    while the connections of the last one linger in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(min(4096, max(128, backlog)))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"cannot listen on {where}: the address is already in use "
                                       f"(is another FastAGI server running?)") from None
        raise ListenError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class ServerLimits:
    max_sessions: int = 2000  # connections in progress in this process (block pending or session running)
    read_timeout: float = 60.0  # longest wait for one line from Asterisk, and for the whole agi_* block
    session_timeout: float = 900.0
    drain_timeout: float = 2.0
    max_busy: int = 8  # sessions running handler code at once beyond which new connections are shed
    allowed_hosts: tuple = LOOPBACK  # IPs and CIDR networks Asterisk may connect from

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_busy < 1:
            raise ValueError("max_sessions and max_busy must be at least 1")
        object.__setattr__(self, "allowed_hosts", allowed_networks(self.allowed_hosts))

    def allows(self, host: str) -> bool:
        """Whether a connection from ``host`` (as accept() gives it) may be served."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:  # an IPv4 peer of a dual-stack socket
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed_hosts)


class _SessionThreads:
    """Threads that run sessions, kept for the next one when a session ends.

    ``threading.Thread.start`` waits until the new thread runs, and under load that wait for the
    interpreter lock cost the accept loop about 4 ms a call (profiled at 140 calls/s), time in which no
    other connection is accepted or read. A kept thread is handed its next session through a queue, at
    once. At most ``keep`` idle threads are kept; a burst beyond them starts new ones.
    """

    def __init__(self, run, keep: int) -> None:
        self._run = run
        self._keep = keep
        self._handoff: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, conn) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._handoff.put(conn)
                return
        threading.Thread(target=self._work, args=(conn,), daemon=True, name="agi-session").start()

    def _work(self, conn) -> None:
        while conn is not None:
            self._run(conn)
            with self._lock:
                if self._idle >= self._keep:
                    return
                self._idle += 1
            conn = self._handoff.get()

    def stop(self) -> None:
        """Let the idle threads end (sessions in progress finish as usual)."""
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._handoff.put(None)


class _SessionTransport(LineTransport):
    """A socket LineTransport that keeps the server's count of busy sessions: idle while it waits on Asterisk."""

    def __init__(self, server: "FastAGIServer", sock: socket.socket, accepted: float):
        limits = server.limits
        self.agi: HotlineAGI | None = None  # before LineTransport.__init__, which sets the deadline
        super().__init__(sock=sock, read_timeout=limits.read_timeout, deadline=accepted + limits.session_timeout)
        self._server = server

    @property
    def deadline(self) -> float | None:
        """The session's budget: the AGI object's once there is one, since a handler may lift it to hand a
        caller who ran out of time on to the default queue (each read is still bounded by read_timeout)."""
        return self.agi.deadline if self.agi is not None else self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._deadline = value

    def read_line(self, until: float | None = None) -> str:
        line = self.pop_line()
        if line is not None:
            return line
        self._server._set_busy(self, False)
        try:
            return super().read_line(until)
        finally:
            self._server._set_busy(self, True)

    def finish(self, drain_timeout: float = 2.0) -> None:
        self._server._set_busy(self, False)
        try:
            super().finish(drain_timeout)
        finally:  # the handler may go on (e.g. saving the ticket): that is work in this process too
            self._server._set_busy(self, True)


class _Connection:
    """One accepted connection, from accept() to its end."""

    __slots__ = ("sock", "transport", "block", "accepted", "block_deadline")

    def __init__(self, server: "FastAGIServer", sock: socket.socket, accepted: float):
        self.sock = sock
        self.transport = _SessionTransport(server, sock, accepted)
        self.block = EnvironmentBlock()
        self.accepted = accepted
        self.block_deadline = accepted + min(server.limits.read_timeout, server.limits.session_timeout)


class _Throttle:
    """At most one log line per interval for one kind of event; each line says how many were left out."""

    def __init__(self, interval: float = _LOG_EVERY):
        self.interval = interval
        self._next = 0.0
        self._left_out = 0

    def ready(self) -> int | None:
        """None: stay quiet; else the number of events left out since the last line."""
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return None
        left_out, self._left_out, self._next = self._left_out, 0, now + self.interval
        return left_out


class FastAGIServer:
    def __init__(self, registry: HandlerRegistry, host: str = "127.0.0.1", port: int = 4573,
                 limits: ServerLimits = ServerLimits(), *, listener: socket.socket | None = None):
        """Serve on ``listener`` (a socket from :func:`bind_listener`, shared by processes), or bind host:port."""
        self.registry = registry
        self.limits = limits
        self._sock = listener if listener is not None else bind_listener(host, port, limits.max_sessions)
        self._stopping = threading.Event()
        self._stop_requested = False  # set by request_stop(), from a signal handler that must not take locks
        self._active = 0  # connections in progress
        # Sessions running handler code (see the module docstring). A set, not a counter under a lock: its
        # add and discard are atomic and idempotent, and this changes twice per AGI command.
        self._busy: set[_SessionTransport] = set()
        self._idle = threading.Condition()  # guards _active; notified when a connection ends
        self._pending: dict[_Connection, None] = {}  # accept loop only: agi_* block not complete, oldest first
        self._thread: threading.Thread | None = None
        self._threads = _SessionThreads(self._run_session, keep=min(256, limits.max_sessions))
        self._accept_failures = 0  # in a row: one log line per burst
        self._allowed_hosts: dict[str, bool] = {}  # accept loop only: the verdict of allows() per address
        self._throttles = {kind: _Throttle() for kind in ("refused", "rejected", "shed", "block")}
        server = weakref.ref(self)  # one server per process outside tests: the gauge reads the latest
        _BUSY.set_function(lambda: len(server()._busy) if server() is not None else 0)

    @property
    def address(self) -> tuple[str, int]:
        return self._sock.getsockname()[:2]

    @property
    def active_sessions(self) -> int:
        """Connections in progress: agi_* block awaited, or session running."""
        return self._active

    @property
    def busy_sessions(self) -> int:
        """Sessions running handler code now (not waiting on Asterisk)."""
        return len(self._busy)

    def serve_forever(self) -> None:
        log.info("FastAGI server listening", extra={"event": "agi.listening", "address": "%s:%d" % self.address,
                                                    "handlers": self.registry.names()})
        self._sock.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        accepting, resume_at = True, 0.0
        try:
            while not (self._stop_requested or self._stopping.is_set()):
                now = time.monotonic()
                if not accepting and now >= resume_at:
                    selector.register(self._sock, selectors.EVENT_READ)
                    accepting = True
                timeout = _POLL if accepting else max(0.0, min(_POLL, resume_at - now))
                if self._pending:
                    timeout = max(0.0, min(timeout, next(iter(self._pending)).block_deadline - now))
                for key, _events in selector.select(timeout):
                    if key.data is not None:
                        self._on_readable(selector, key.data)
                    elif not self._accept_some(selector):
                        selector.unregister(self._sock)
                        accepting, resume_at = False, time.monotonic() + _ACCEPT_PAUSE
                self._expire_blocks(selector)
        finally:
            for conn in list(self._pending):
                self._close_pending(selector, conn, "shutdown")
            selector.close()
            self._sock.close()

    def request_stop(self) -> None:
        """Make serve_forever return within a moment; safe in a signal handler (it only sets a flag)."""
        self._stop_requested = True

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests; the commands call serve_forever themselves)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="agi-accept")
        self._thread.start()
        return self._thread

    def shutdown(self, grace: float = 10.0) -> bool:
        """Stop accepting, then wait up to ``grace`` seconds for sessions in progress to end."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        idle = self.wait_idle(grace)
        self._threads.stop()
        return idle

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no connection is in progress (tests wait on it instead of sleeping)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < end:
                self._idle.wait(timeout=max(0.0, end - time.monotonic()))
            return self._active == 0

    # The accept loop: everything below up to _run_session runs in the serve_forever thread.

    def _accept_some(self, selector: selectors.BaseSelector) -> bool:
        """Accept what is waiting; False when out of descriptors (the caller pauses accepting)."""
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = self._sock.accept()
            except BlockingIOError:  # nothing left, or a sibling process sharing the socket took it
                return True
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                if exc.errno in _EXHAUSTED:
                    self._accept_failed(exc)
                    return False
                raise
            if self._accept_failures:
                log.warning("accepting connections again", extra={"event": "agi.accept_resumed",
                                                                  "failures": self._accept_failures})
                self._accept_failures = 0
            self._admit(selector, sock, peer[0])
        return True

    def _accept_failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        _ACCEPT_FAILED.labels(name).inc()
        if not self._accept_failures:
            log.error("cannot accept a connection (%s): pausing accept, calls in progress go on", name,
                      extra={"event": "agi.accept_paused", "error": name, "connections": self._active})
        self._accept_failures += 1

    def _allows(self, host: str) -> bool:
        """limits.allows, remembered per address (Asterisk connects from the same few, a call at a time)."""
        allowed = self._allowed_hosts.get(host)
        if allowed is None:
            if len(self._allowed_hosts) >= _ALLOWED_CACHE:
                self._allowed_hosts.clear()
            allowed = self._allowed_hosts[host] = self.limits.allows(host)
        return allowed

    def _admit(self, selector: selectors.BaseSelector, sock: socket.socket, host: str) -> None:
        if not self._allows(host):
            _REFUSED.inc()
            self._turn_away(sock, "refused", "connection from a host not in agi_allowed_hosts closed",
                            event="agi.refused_host", address=host)
            return
        with self._idle:
            if self._active >= self.limits.max_sessions:
                verdict = "rejected"
            elif len(self._busy) >= self.limits.max_busy:
                verdict = "shed"
            else:
                verdict = ""
                self._active += 1
        if verdict == "rejected":
            _REJECTED.inc()
            self._turn_away(sock, "rejected", "session limit reached; connection closed for the dialplan fallback",
                            event="agi.rejected", max_sessions=self.limits.max_sessions)
            return
        if verdict == "shed":
            self._shed(sock)
            return
        _ACTIVE.inc()
        conn = _Connection(self, sock, time.monotonic())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, conn)
        self._pending[conn] = None

    def _shed(self, sock: socket.socket) -> None:
        _SHED.inc()
        self._turn_away(sock, "shed", "saturated; connection closed for the dialplan fallback",
                        event="agi.shed", max_busy=self.limits.max_busy)

    def _turn_away(self, sock: socket.socket, kind: str, message: str, **extra) -> None:
        """Close without a word; what already arrived is read first, so the close is a FIN, not a reset."""
        try:
            sock.setblocking(False)
            sock.recv(65536)
        except OSError:
            pass
        sock.close()
        left_out = self._throttles[kind].ready()
        if left_out is not None:
            log.warning(message, extra={**extra, "left_out": left_out})

    def _on_readable(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        if conn not in self._pending:  # ended earlier in this round of events
            return
        transport = conn.transport
        try:
            open_ = transport.receive()
            while (line := transport.pop_line()) is not None:  # bounded: the block raises past MAX_ENV_LINES
                if conn.block.add(line):
                    self._start_session(selector, conn)
                    return
            if not open_:
                self._close_pending(selector, conn, "hangup")
        except ConnectionClosed:
            self._close_pending(selector, conn, "hangup")
        except AGIProtocolError as exc:
            self._close_pending(selector, conn, "protocol_error", f"AGI protocol error: {exc}")

    def _expire_blocks(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for _ in range(len(self._pending)):  # oldest first: deadlines come in the order of accept
            oldest = next(iter(self._pending))
            if oldest.block_deadline > now:
                break
            self._close_pending(selector, oldest, "read_timeout", "the agi_* block did not arrive within the "
                                                                  "read timeout")

    def _close_pending(self, selector: selectors.BaseSelector, conn: _Connection, outcome: str,
                       message: str = "") -> None:
        del self._pending[conn]
        selector.unregister(conn.sock)
        conn.sock.close()
        if message:
            left_out = self._throttles["block"].ready()
            if left_out is not None:
                log.warning(message, extra={"event": f"agi.{outcome}", "left_out": left_out})
        self._ended(conn, "unknown", outcome)

    def _start_session(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        del self._pending[conn]
        selector.unregister(conn.sock)
        admitted = len(self._busy) < self.limits.max_busy  # a soft bound: session threads add themselves too
        if admitted:  # busy from now to its first command: a burst counts as it lands
            self._busy.add(conn.transport)
            try:
                self._threads.submit(conn)
                return
            except RuntimeError:  # no thread to be had (memory, a thread limit): the dialplan falls back
                self._set_busy(conn.transport, False)
        self._shed(conn.sock)
        self._ended(conn, None, "shed")

    def _ended(self, conn: _Connection, script: str | None, outcome: str) -> None:
        """Count a connection that is over (None: turned away, only _SHED counts it)."""
        if script is not None:
            _SESSIONS.labels(script, outcome).inc()
            _DURATION.observe(time.monotonic() - conn.accepted)
        _ACTIVE.dec()
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def _set_busy(self, transport: _SessionTransport, busy: bool) -> None:
        if busy:
            self._busy.add(transport)
        else:
            self._busy.discard(transport)

    # One session, in its own thread.

    def _run_session(self, conn: _Connection) -> None:
        env, transport = conn.block.env, conn.transport
        script, outcome = env.script, "ok"
        if conn.block.skipped:
            log.warning("skipped malformed agi_* lines", extra={"event": "agi.bad_env_line",
                                                                 "lines": conn.block.skipped})
        try:
            handler = self.registry.get(script)
            if handler is None:
                outcome = "unknown_script"
                log.warning("no handler for this AGI request", extra={"event": "agi.unknown_script",
                                                                       "script": script[:64]})
                return
            agi = transport.agi = HotlineAGI(transport, env, deadline=transport.deadline)
            handler.handle(agi)
        except (ConnectionClosed, pyst.AGIHangup):
            outcome = "hangup"
        except AsteriskSilent:
            outcome = "read_timeout"
            log.warning("Asterisk sent nothing within the read timeout", extra={"event": "agi.read_timeout",
                                                                                 "script": script})
        except SessionExpired:
            outcome = "session_timeout"
            log.warning("session ran past its time budget", extra={"event": "agi.session_timeout",
                                                                    "script": script})
        except AGIProtocolError as exc:
            outcome = "protocol_error"
            log.warning("AGI protocol error: %s", exc, extra={"event": "agi.protocol_error", "script": script})
        except Exception:
            outcome = "error"
            log.exception("AGI handler failed", extra={"event": "agi.handler_error", "script": script})
        finally:
            transport.finish(self.limits.drain_timeout)
            self._set_busy(transport, False)
            conn.sock.close()
            self._ended(conn, script if self.registry.get(script) else "unknown", outcome)
