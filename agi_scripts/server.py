"""The FastAGI server: accepts Asterisk's connections and runs one handler per session.

One thread per session, bounded by ``max_sessions``: a connection beyond the bound is closed at
once without a word, which Asterisk reports as AGISTATUS=SUCCESS with no variables set, so the
dialplan's fallback sends the caller to the default queue within milliseconds instead of waiting.
Every read has a timeout and every session a time budget, because Asterisk has neither.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

from asterisk import agi as pyst

from agi_scripts.channel import (
    AsteriskSilent,
    ConnectionClosed,
    HotlineAGI,
    LineTransport,
    SessionExpired,
    read_environment,
)
from agi_scripts.protocol import AGIProtocolError
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


@dataclass(frozen=True)
class ServerLimits:
    max_sessions: int = 2000
    read_timeout: float = 60.0
    session_timeout: float = 900.0
    drain_timeout: float = 2.0


class FastAGIServer:
    def __init__(self, registry: HandlerRegistry, host: str = "127.0.0.1", port: int = 4573,
                 limits: ServerLimits = ServerLimits(), reuse_port: bool = False):
        self.registry = registry
        self.limits = limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # several processes on one port; the kernel spreads the connections
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind((host, port))
        self._sock.listen(min(4096, max(128, limits.max_sessions)))
        self._sock.settimeout(0.2)  # how often the accept loop looks at the stop flag
        self._stopping = threading.Event()
        self._active = 0
        self._idle = threading.Condition()  # guards _active; notified when a session ends
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._sock.getsockname()[:2]

    @property
    def active_sessions(self) -> int:
        return self._active

    def serve_forever(self) -> None:
        log.info("FastAGI server listening", extra={"event": "agi.listening", "address": "%s:%d" % self.address,
                                                    "handlers": self.registry.names()})
        while not self._stopping.is_set():
            try:
                conn, _peer = self._sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            with self._idle:
                admitted = self._active < self.limits.max_sessions
                if admitted:
                    self._active += 1
            if not admitted:
                _REJECTED.inc()
                log.warning("session limit reached; connection closed for the dialplan fallback",
                            extra={"event": "agi.rejected", "max_sessions": self.limits.max_sessions})
                conn.close()
                continue
            _ACTIVE.inc()
            threading.Thread(target=self._run_session, args=(conn,), daemon=True, name="agi-session").start()
        self._sock.close()

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
        return self.wait_idle(grace)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no session is in progress (tests wait on it instead of sleeping)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < end:
                self._idle.wait(timeout=max(0.0, end - time.monotonic()))
            return self._active == 0

    def _run_session(self, conn: socket.socket) -> None:
        started = time.monotonic()
        script, outcome = "", "ok"
        transport = LineTransport.over_socket(conn, self.limits.read_timeout)
        try:
            env = read_environment(transport)
            script = env.script
            handler = self.registry.get(script)
            if handler is None:
                outcome = "unknown_script"
                log.warning("no handler for this AGI request", extra={"event": "agi.unknown_script",
                                                                       "script": script[:64]})
                return
            agi = HotlineAGI(transport, env, deadline=started + self.limits.session_timeout)
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
            conn.close()
            _SESSIONS.labels(script if self.registry.get(script) else "unknown", outcome).inc()
            _DURATION.observe(time.monotonic() - started)
            _ACTIVE.dec()
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
