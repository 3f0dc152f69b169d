"""Process supervision: run a set of child processes, restart one that dies, stop them all on a signal.

``hotline serve`` supervises its services (FastAGI server, web API, worker) as subprocesses, and
``hotline agi`` its FastAGI processes as forked children sharing one listening socket.

* A child that dies is started again, the others keep running. A child that dies soon after its start
  waits longer each time before the next try (1 s doubling to 30 s), so a crash loop does not spin.
* A child that exits with :data:`EXIT_CONFIG` found a fault in the settings that a restart cannot heal:
  the supervisor stops everything and exits with that code.
* SIGTERM or SIGINT stops every child (SIGTERM, then SIGKILL after ``stop_timeout``); a second signal
  while stopping kills at once. Once stopped, further SIGTERM/SIGINT are ignored for the rest of the
  process's short life. The signal handler only sets a flag and writes a byte to a pipe: it must
  never take a lock the interrupted main thread may hold (``threading.Event.set()`` from a handler can
  deadlock that way), and the main loop wakes on the pipe within no time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger("hotline.supervisor")

#: Exit code of a service that found its configuration unusable (sysexits.h EX_CONFIG): not restarted.
EXIT_CONFIG = 78

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: A child that ran at least this long is considered healthy: its next restart waits FIRST_BACKOFF again.
HEALTHY_UPTIME = 30.0


class Child:
    """One supervised process: started by ``start()``, polled by ``poll()`` (None while it runs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid: int | None = None
        self.started_at = 0.0
        self.backoff = FIRST_BACKOFF
        self.restart_at: float | None = None

    def start(self) -> None:
        raise NotImplementedError

    def poll(self) -> int | None:
        raise NotImplementedError

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class CommandChild(Child):
    """A child that runs a command line (``subprocess.Popen``) in a process group of its own.

    The group is what is signalled and, once the child has died, killed: a service's own children (the
    worker's RQ scheduler) must not outlive it as orphans when it is killed with -9.
    """

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        super().__init__(name)
        self.argv = list(argv)
        self.env = env
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        if self._proc is None:
            return None
        was_running = self._proc.returncode is None
        code = self._proc.poll()
        if code is not None and was_running:  # once, when its death is first seen (a pgid may be reused later)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)  # whatever the dead service left behind
        return code

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)


class ForkedChild(Child):
    """A child that runs ``target()`` in a forked copy of this process (it inherits open sockets)."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name)
        self.target = target
        self._status: int | None = None

    def start(self) -> None:
        self._status = None
        pid = os.fork()
        if pid == 0:  # the child: never return into the supervisor's loop
            code = 0
            try:
                _reset_signals()
                self.target()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s failed", self.name)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.pid = pid

    def poll(self) -> int | None:
        if self._status is not None or self.pid is None:
            return self._status
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self._status = -1
            return self._status
        if pid == 0:
            return None
        self._status = os.waitstatus_to_exitcode(status)
        return self._status


def _reset_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Supervisor:
    children: list[Child]
    stop_timeout: float = 20.0
    clock: Callable[[], float] = time.monotonic
    _stop_requested: int = field(default=0, init=False)
    _wake_r: int = field(default=-1, init=False)
    _wake_w: int = field(default=-1, init=False)

    def run(self) -> int:
        """Start every child and supervise them until a signal; returns the exit code for the process."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_child)
        try:
            for child in self.children:
                self._start(child)
            code = self._watch()
            self._stop_all()
            return code
        finally:
            for sig, handler in previous.items():
                if sig != signal.SIGCHLD and self._stop_requested:
                    # Stopping already: more of a signal storm must not kill the process in its last steps
                    # (the caller's cleanup, e.g. the embedded Redis), nor write to the pipe closed below.
                    handler = signal.SIG_IGN
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- signal handlers: a flag and a byte, nothing else ------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self._stop_requested += 1
        self._wake()

    def _on_child(self, _signum, _frame) -> None:
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe already holds a wake-up
            os.write(self._wake_w, b"\0")

    def request_stop(self) -> None:
        """Stop from the same process (tests, or a caller that handles signals itself)."""
        self._stop_requested += 1
        self._wake()

    # -- the loop ----------------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = self.clock()
        try:
            child.start()
        except OSError as exc:
            log.error("cannot start %s: %s; trying again in %.0f s", child.name, exc.strerror or exc,
                      child.backoff, extra={"event": "supervisor.start_failed", "service": child.name})
            child.pid = None
            child.restart_at = self.clock() + child.backoff
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            return
        log.info("%s started", child.name, extra={"event": "supervisor.started", "service": child.name,
                                                  "pid": child.pid})

    def _watch(self) -> int:
        while not self._stop_requested:
            now = self.clock()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self._start(child)
                    continue
                code = child.poll()
                if code is None:
                    continue
                if code == EXIT_CONFIG:
                    log.error("%s refused its configuration; stopping", child.name,
                              extra={"event": "supervisor.config_error", "service": child.name})
                    return EXIT_CONFIG
                uptime = now - child.started_at
                if uptime >= HEALTHY_UPTIME:
                    child.backoff = FIRST_BACKOFF
                log.error("%s exited (code %s) after %.1f s; starting it again in %.0f s", child.name, code,
                          uptime, child.backoff, extra={"event": "supervisor.child_died", "service": child.name,
                                                        "code": code})
                child.pid = None
                child.restart_at = now + child.backoff
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            self._sleep(self._next_deadline(now))
        return 0

    def _next_deadline(self, now: float) -> float:
        waits = [c.restart_at - now for c in self.children if c.restart_at is not None]
        return max(0.0, min([1.0, *waits]))

    def _sleep(self, timeout: float) -> None:
        try:
            select.select([self._wake_r], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            pass
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _stop_all(self) -> None:
        """SIGTERM to every child; SIGKILL after stop_timeout or at a second stop signal."""
        signals_seen = self._stop_requested
        for child in self.children:
            child.restart_at = None
            if child.pid is not None and child.poll() is None:
                child.signal(signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout
        killed = False
        while any(c.pid is not None and c.poll() is None for c in self.children):
            if not killed and (self.clock() >= deadline or self._stop_requested > signals_seen):
                log.warning("killing the services that are still running", extra={"event": "supervisor.kill"})
                for child in self.children:
                    if child.pid is not None and child.poll() is None:
                        child.signal(signal.SIGKILL)
                killed, deadline = True, self.clock() + 5.0
            elif killed and self.clock() >= deadline:  # pragma: no cover - a process SIGKILL cannot end
                log.error("some services did not end even after SIGKILL", extra={"event": "supervisor.stuck"})
                break
            self._sleep(0.2)
        log.info("all services stopped", extra={"event": "supervisor.stopped"})
