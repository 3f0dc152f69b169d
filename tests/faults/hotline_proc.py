"""The hotline's processes as an operator runs them, a stream of simulated calls, and the invariants.

* :class:`Hotline` runs ``python -m hotline.cli ...`` subprocesses (``db upgrade``, ``agi``, ``worker``,
  ``serve``) with ``HOTLINE_*`` environment variables only, each in its own process group with its stdout
  and stderr in files under ``<workdir>/logs`` (the privacy tests read them all). Every process carries
  ``FAULT_TESTS_TAG`` in its environment, so whatever it forks can be found (and killed) afterwards.
* :class:`CallStream` places a bounded number of calls from a few threads, paced, each through the
  simulated Asterisk (``agi_scripts.simulator``), and records what the dialplan would have seen.
* :func:`check_invariants` polls the database (SQLAlchemy, table names only) until every ticket number
  handed to a call is stored and none is left ``in_ivr`` (bounded), then asserts the invariants.

Nothing here imports the product's internals except the simulator: the product is moving modules.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from agi_scripts.simulator import Caller, SimulatedChannel, place_call
from tests.servers import LOOPBACK, die_with_parent, free_port, kill_group, pid_alive, port_accepts, wait_gone

#: Where the product is run from (cwd of the subprocesses); FAULT_TESTS_REPO points elsewhere, e.g. an
#: exported copy of a commit while the working tree is being changed.
REPO = Path(os.environ.get("FAULT_TESTS_REPO") or Path(__file__).resolve().parents[2])
TAG_VARIABLE = "FAULT_TESTS_TAG"  # not HOTLINE_*: those name settings, and unknown ones are refused


# --- processes ------------------------------------------------------------------------------------


def proc_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class Service:
    """One ``hotline`` subprocess, in its own process group."""

    def __init__(self, name: str, proc: subprocess.Popen, out: Path, err: Path) -> None:
        self.name, self.proc, self.out, self.err = name, proc, out, err

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def kill9(self) -> None:
        """kill -9 to the process only (not its group: ``serve``'s children are the test's business)."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if it is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to the group after ``timeout``."""
        if self.alive:
            kill_group(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                kill_group(self.proc.pid, signal.SIGKILL)
                self.wait_exit(10)
        kill_group(self.proc.pid, signal.SIGKILL)  # whatever it left in its group

    def stderr_text(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


class Hotline:
    """The hotline's commands against given database and Redis URLs, in a work directory of their own."""

    def __init__(self, workdir: Path, database_url: str, redis_url: str, **settings) -> None:
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "var"
        self.logs_dir = self.workdir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.agi_port = free_port()
        self.web_port = free_port()
        self.tag = uuid.uuid4().hex
        self.services: list[Service] = []
        self._counter = itertools.count(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env.update({
            "HOTLINE_DATABASE_URL": database_url,
            "HOTLINE_REDIS_URL": redis_url,
            "HOTLINE_DATA_DIR": str(self.data_dir),
            "HOTLINE_AGI_HOST": LOOPBACK,
            "HOTLINE_AGI_PORT": str(self.agi_port),
            "HOTLINE_AGI_PROCESSES": "1",
            # These suites place streams of calls at once to test faults, not shedding (tests/test_agi_abuse.py
            # does): a bound above any stream's size keeps a burst of arrivals from being shed by its timing.
            "HOTLINE_AGI_MAX_BUSY": "64",
            "HOTLINE_AGI_METRICS_PORT": "0",
            "HOTLINE_AGI_READ_TIMEOUT": "10",
            "HOTLINE_AGI_SESSION_TIMEOUT": "30",
            "HOTLINE_WEB_HOST": LOOPBACK,
            "HOTLINE_WEB_PORT": str(self.web_port),
            "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_LOG_LEVEL": "INFO",
            # Short pauses and timeouts, so each fault heals within the test's bounded waits.
            "HOTLINE_DATABASE_CONNECT_TIMEOUT": "2",
            "HOTLINE_DATABASE_STATEMENT_TIMEOUT": "3",
            "HOTLINE_TICKET_DB_PAUSE": "1",
            "HOTLINE_TICKET_SPOOL_REPLAY_SECONDS": "1",
            "HOTLINE_TICKET_REDIS_PAUSE": "1",
            "HOTLINE_STALE_CALL_MARGIN_SECONDS": "2",
            "HOTLINE_STALE_CALL_CHECK_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            TAG_VARIABLE: self.tag,
        })
        env.update({f"HOTLINE_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env

    # -- commands ----------------------------------------------------------------------------------

    def _files(self, name: str) -> tuple[Path, Path]:
        n = next(self._counter)
        return self.logs_dir / f"{n:02d}-{name}.out", self.logs_dir / f"{n:02d}-{name}.err"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "hotline.cli", *args]

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command to its end (in its own process group; killed with it after ``timeout``)."""
        out, err = self._files(args[0] if args else "cli")
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.Popen(self.command(*args), cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=fout, stderr=ferr, start_new_session=True,
                                    preexec_fn=die_with_parent)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise AssertionError(f"`hotline {' '.join(args)}` did not finish within {timeout}s; "
                                     f"stderr: {err.read_text(errors='replace')[-2000:]}") from None
            finally:
                kill_group(proc.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))

    def upgrade(self) -> None:
        result = self.run("db", "upgrade")
        assert result.returncode == 0, f"hotline db upgrade failed: {result.stderr[-3000:]}"

    def start(self, *args: str, env: dict[str, str] | None = None) -> Service:
        out, err = self._files(args[0])
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.Popen(self.command(*args), cwd=REPO, env={**self.env, **(env or {})},
                                    stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr, start_new_session=True,
                                    preexec_fn=die_with_parent)
        service = Service(args[0], proc, out, err)
        self.services.append(service)
        return service

    def start_agi(self, wait: bool = True, **env) -> Service:
        service = self.start("agi", env={f"HOTLINE_{k.upper()}": str(v) for k, v in env.items()})
        if wait:
            self.wait_port(self.agi_port, service)
        return service

    def start_worker(self) -> Service:
        return self.start("worker")

    def start_serve(self) -> Service:
        return self.start("serve")

    def wait_port(self, port: int, service: Service | None = None, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if service is not None and not service.alive:
                raise AssertionError(f"`hotline {service.name}` exited ({service.proc.returncode}) before "
                                     f"listening: {service.stderr_text()[-3000:]}")
            if port_accepts(port):
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing listens on port {port} after {timeout}s")

    # -- looking around ----------------------------------------------------------------------------

    def tagged_pids(self) -> list[int]:
        """Every live process started by this Hotline or forked by one of them (found by its environment)."""
        me = os.getpid()
        return [pid for pid in all_pids()
                if pid != me and pid_alive(pid) and proc_environ(pid).get(TAG_VARIABLE) == self.tag]

    def log_files(self) -> list[Path]:
        return sorted(self.logs_dir.iterdir())

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.log_files())

    def log_lines(self) -> list[tuple[str, str]]:
        """(file name, line) for every line any subprocess wrote."""
        lines = []
        for path in self.log_files():
            for line in path.read_text(errors="replace").splitlines():
                lines.append((path.name, line))
        return lines

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in self.log_files():
            text = path.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {path.name} ---\n{text[-chars:]}")
        return "\n".join(parts)

    def spool_lines(self) -> list[dict]:
        """Every snapshot line in the spool files under <data_dir>/spool (any file name there)."""
        spool = self.data_dir / "spool"
        lines = []
        if spool.is_dir():
            for path in sorted(spool.rglob("*")):
                if not path.is_file() or path.name.endswith(".lock"):
                    continue
                for line in path.read_text(errors="replace").splitlines():
                    with contextlib.suppress(ValueError):
                        data = json.loads(line)
                        if isinstance(data, dict):
                            lines.append(data)
        return lines

    # -- the end -----------------------------------------------------------------------------------

    def close(self) -> list[int]:
        """SIGKILL every service's process group (the end of a test: no need to wait for a clean stop), then
        anything tagged that is left (a process that left its group); returns the pids found left over."""
        for service in self.services:
            kill_group(service.pid, signal.SIGKILL)
            service.wait_exit(10)
        leftovers = self.tagged_pids()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(leftovers, 10)
        return leftovers


# --- calls ----------------------------------------------------------------------------------------

_uniqueids = itertools.count(int(time.time()) % 100000 * 10)

#: Menu paths: (keys, note). Every one of them ends in a queue.
MENUS: tuple[list[str], ...] = (
    ["1", "1"],  # Mandarin, consultation / complaint
    ["1", "2"],  # Mandarin, urgent
    ["2", "1"],  # English, general
    ["1", "3"],  # Mandarin, traffic
    ["2", "2"],  # English, urgent
    ["1", "0"],  # Mandarin, an agent
    ["", ""],    # presses nothing
    ["1", "9", "8"],  # a wrong key twice
)


@dataclass
class PlannedCall:
    index: int
    number: str  # agi_callerid as the carrier presents it
    e164: str | None  # what the stored ticket must say
    keys: list[str]
    uniqueid: str
    hangup_at: int | None = None  # the caller hangs up while this AGI command is pending
    restricted: bool = False  # agi_callingpres 32: the caller withheld the number (still sent)
    think: float = 0.0  # seconds the caller takes before each key press


@dataclass
class CallResult:
    call: PlannedCall
    ticket: str | None = None
    queue: str | None = None
    caller_hung_up: bool = False
    error: str | None = None  # the server could not be reached or broke the session
    variables: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    @property
    def kind(self) -> str:
        """routed: HOTLINE_QUEUE set; abandoned: the caller hung up first; fallback: the dialplan's default
        queue (the server refused, closed, or said nothing)."""
        if self.queue:
            return "routed"
        if self.caller_hung_up:
            return "abandoned"
        return "fallback"


def caller_formats(i: int) -> tuple[str, str]:
    """(number as presented, E.164) for call ``i``: four formats of mobiles and Haikou landlines."""
    n = i % 10000
    mobile = f"1390777{n:04d}"
    fmt = i % 5
    if fmt == 0:
        return "+86" + mobile, "+86" + mobile
    if fmt == 1:
        return "86" + mobile, "+86" + mobile
    if fmt == 2:
        return mobile, "+86" + mobile
    if fmt == 3:
        return f"08986667{n:04d}", f"+868986667{n:04d}"
    return f"0086{mobile}", "+86" + mobile


def new_uniqueid() -> str:
    return f"{int(time.time())}.{next(_uniqueids)}"


def plan_calls(count: int, start: int = 0, hangup_every: int = 0, repeat_every: int = 7,
               think: float = 0.0) -> list[PlannedCall]:
    """``count`` varied calls: callers in several formats (some calling again), every menu path; every
    ``hangup_every``-th caller hangs up in the menu."""
    calls = []
    for j in range(count):
        i = start + j
        source = i - 3 if repeat_every and j >= 3 and i % repeat_every == 0 else i  # a repeat caller
        number, e164 = caller_formats(source)
        hangup_at = 3 if hangup_every and i % hangup_every == hangup_every - 1 else None
        calls.append(PlannedCall(index=i, number=number, e164=e164, keys=list(MENUS[i % len(MENUS)]),
                                 uniqueid=new_uniqueid(), hangup_at=hangup_at, think=think))
    return calls


class HarnessChannel(SimulatedChannel):
    """The simulated Asterisk, plus what its Caller cannot say: a restricted presentation (the number is
    sent, agi_callingpres 32), and a caller who thinks before pressing keys."""

    def __init__(self, caller: Caller, host: str, port: int, restricted: bool, think: float) -> None:
        super().__init__(caller, host, port)
        self.restricted = restricted
        self.think = think

    def env_lines(self) -> list[str]:
        lines = super().env_lines()
        if self.restricted:
            lines = ["agi_callingpres: 32" if line.startswith("agi_callingpres:") else line for line in lines]
            self.transcript = [("<<< agi_callingpres: 32" if t.startswith("<<< agi_callingpres:") else t)
                               for t in self.transcript]
        return lines

    def respond(self, command: str) -> list[str]:
        if self.think and " ".join(command.split()).upper().startswith("GET DATA"):
            time.sleep(self.think)
        return super().respond(command)


def place_custom_call(call: PlannedCall, port: int, timeout: float) -> tuple[dict[str, str], bool]:
    """place_call with a HarnessChannel."""
    caller = Caller(number=call.number, keys=list(call.keys), hangup_at=call.hangup_at, uniqueid=call.uniqueid)
    channel = HarnessChannel(caller, LOOPBACK, port, call.restricted, call.think)
    result = place_call(caller, LOOPBACK, port, timeout=timeout, channel=channel)
    return result.variables, result.caller_hung_up


def _clean(value: str | None) -> str | None:
    return value.strip().strip('"') if value is not None else None


def place(call: PlannedCall, port: int, timeout: float = 30.0) -> CallResult:
    """One call; never raises (a refused connection is the dialplan's fallback case)."""
    result = CallResult(call=call, started=time.monotonic())
    try:
        if call.restricted or call.think:
            variables, hung_up = place_custom_call(call, port, timeout)
        else:
            r = place_call(Caller(number=call.number, keys=list(call.keys), hangup_at=call.hangup_at,
                                  uniqueid=call.uniqueid), LOOPBACK, port, timeout=timeout)
            variables, hung_up = r.variables, r.caller_hung_up
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.ended = time.monotonic()
        return result
    result.variables = {k: _clean(v) for k, v in variables.items()}
    result.ticket = result.variables.get("HOTLINE_TICKET") or None
    result.queue = result.variables.get("HOTLINE_QUEUE") or None
    result.caller_hung_up = hung_up and call.hangup_at is not None
    result.ended = time.monotonic()
    return result


class CallStream:
    """Places ``calls`` from ``threads`` threads, call i starting no sooner than i/rate s after the start;
    bounded: no call starts after ``deadline`` seconds (those are counted as not placed)."""

    def __init__(self, port: int, calls: list[PlannedCall], threads: int = 6, rate: float = 40.0,
                 deadline: float = 90.0, call_timeout: float = 30.0) -> None:
        self.port = port
        self.calls = calls
        self.threads = threads
        self.rate = rate
        self.deadline = deadline
        self.call_timeout = call_timeout
        self.results: list[CallResult] = []
        self.not_placed: list[PlannedCall] = []
        self._next = 0
        self._lock = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._t0 = 0.0

    def start(self) -> "CallStream":
        self._t0 = time.monotonic()
        for n in range(self.threads):
            t = threading.Thread(target=self._run, name=f"caller-{n}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _take(self) -> PlannedCall | None:
        with self._lock:
            if self._next >= len(self.calls):
                return None
            call = self.calls[self._next]
            self._next += 1
            return call

    def _run(self) -> None:
        while True:
            call = self._take()
            if call is None:
                return
            position = call.index - self.calls[0].index
            start_at = self._t0 + (position / self.rate if self.rate else 0.0)
            now = time.monotonic()
            if self._stop.is_set() or now - self._t0 > self.deadline:
                with self._lock:
                    self.not_placed.append(call)
                continue
            if start_at > now:
                self._stop.wait(start_at - now)
            result = place(call, self.port, self.call_timeout)
            with self._lock:
                self.results.append(result)
                self._lock.notify_all()

    def done(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_done(self, count: int, timeout: float) -> int:
        """Wait until ``count`` calls have ended (or all did, or ``timeout``); returns how many ended."""
        end = time.monotonic() + timeout
        with self._lock:
            while len(self.results) < min(count, len(self.calls)) and time.monotonic() < end:
                self._lock.wait(timeout=min(0.2, max(0.0, end - time.monotonic())))
            return len(self.results)

    def join(self, timeout: float | None = None) -> list[CallResult]:
        timeout = timeout if timeout is not None else self.deadline + self.call_timeout + 30
        end = time.monotonic() + timeout
        for t in self._workers:
            t.join(timeout=max(0.0, end - time.monotonic()))
        alive = [t.name for t in self._workers if t.is_alive()]
        self._stop.set()
        assert not alive, f"call threads still running after {timeout}s: {alive}"
        return sorted(self.results, key=lambda r: r.call.index)


def run_calls(port: int, calls: list[PlannedCall], threads: int = 6, rate: float = 0.0) -> list[CallResult]:
    return CallStream(port, calls, threads=threads, rate=rate).start().join()


# --- the database ---------------------------------------------------------------------------------


def _engine(database_url: str):
    """An engine for the checks: no pool (each poll connects afresh), a short connect timeout."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if database_url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + database_url[len("postgresql://"):]
        return create_engine(url, connect_args={"connect_timeout": 3}, poolclass=NullPool)
    return create_engine(database_url, poolclass=NullPool)


@dataclass
class StoredTicket:
    number: str
    status: str
    caller_e164: str | None
    ivr_path: str | None
    category: str | None
    urgency: str | None
    confidential: bool
    revision: int
    calls: list[tuple[str, str | None]]  # (uniqueid, outcome) of its call records


def read_tickets(database_url: str) -> dict[str, StoredTicket]:
    """Every ticket in the database, with its call records."""
    from sqlalchemy import text

    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT t.number, t.status, t.caller_e164, t.ivr_path, t.category, t.urgency, t.confidential, "
                "t.revision, c.uniqueid, c.outcome FROM tickets t LEFT JOIN call_records c ON c.ticket_id = t.id"
            )).all()
    finally:
        engine.dispose()
    tickets: dict[str, StoredTicket] = {}
    for r in rows:
        t = tickets.get(r.number)
        if t is None:
            t = tickets[r.number] = StoredTicket(r.number, r.status, r.caller_e164, r.ivr_path, r.category,
                                                 r.urgency, bool(r.confidential), r.revision, [])
        if r.uniqueid is not None:
            t.calls.append((r.uniqueid, r.outcome))
    return tickets


@dataclass
class Summary:
    sent: int
    kinds: dict[str, int]
    tickets_handed: int
    tickets_stored: int
    waited: float

    def __str__(self) -> str:
        return (f"{self.sent} calls: {dict(self.kinds)}; {self.tickets_handed} ticket numbers handed out, "
                f"{self.tickets_stored} stored (waited {self.waited:.1f}s)")


def wait_for_tickets(database_url: str, numbers: Iterable[str], timeout: float,
                     ) -> tuple[dict[str, StoredTicket], float]:
    """Poll until every number is stored and no ticket is ``in_ivr`` (or ``timeout``); returns the last read."""
    wanted = set(numbers)
    start = time.monotonic()
    end = start + timeout
    tickets: dict[str, StoredTicket] = {}
    while True:
        try:
            tickets = read_tickets(database_url)
        except Exception:  # the database is still coming back: poll again
            tickets = tickets or {}
        else:
            if wanted <= tickets.keys() and not any(t.status == "in_ivr" for t in tickets.values()):
                break
        if time.monotonic() >= end:
            break
        time.sleep(0.25)
    return tickets, time.monotonic() - start


def check_invariants(database_url: str, results: list[CallResult], *, planned: int | None = None,
                     known: Iterable[str] = (), timeout: float = 60.0, every_call_routes: bool = True,
                     every_call_gets_a_ticket: bool = True) -> Summary:
    """The invariants of a call stream, after polling the database (bounded) for the tickets to arrive.

    * every planned call was placed, and sorted into routed / abandoned (the caller hung up) / fallback;
      with ``every_call_routes`` no call ends in the dialplan's fallback;
    * with ``every_call_gets_a_ticket`` every call got a ticket number (HOTLINE_TICKET);
    * no ticket number was handed to two calls;
    * every handed-out number is stored, none stays ``in_ivr``, no stored ticket was handed to no call
      (``known``: numbers the test made itself, e.g. a warm-up call);
    * each stored ticket carries its call: the caller's E.164 number and the call's uniqueid;
      a routed call's ticket is ``queued``, an abandoned one's ``abandoned_in_ivr``.
    """
    problems: list[str] = []
    kinds = collections.Counter(r.kind for r in results)
    if planned is not None and len(results) != planned:
        problems.append(f"{planned} calls planned, {len(results)} placed")
    if every_call_routes:
        fallback = [r for r in results if r.kind == "fallback"]
        if fallback:
            problems.append(f"{len(fallback)} of {len(results)} calls not routed by the backend (dialplan "
                            f"fallback), e.g. call {fallback[0].call.index}: error={fallback[0].error!r} "
                            f"variables={fallback[0].variables}")
    without = [r for r in results if not r.ticket]
    if every_call_gets_a_ticket and without:
        problems.append(f"{len(without)} of {len(results)} calls got no ticket number (HOTLINE_TICKET), e.g. "
                        f"call {without[0].call.index}: error={without[0].error!r} "
                        f"variables={without[0].variables}")
    by_number: dict[str, list[CallResult]] = collections.defaultdict(list)
    for r in results:
        if r.ticket:
            by_number[r.ticket].append(r)
    doubled = {n: [r.call.index for r in rs] for n, rs in by_number.items() if len(rs) > 1}
    if doubled:
        sample = dict(list(doubled.items())[:5])
        problems.append(f"{len(doubled)} ticket numbers handed to two or more calls, e.g. {sample}")

    tickets, waited = wait_for_tickets(database_url, by_number, timeout)
    missing = sorted(set(by_number) - tickets.keys())
    if missing:
        problems.append(f"{len(missing)} of {len(by_number)} handed-out ticket numbers not in the database "
                        f"after {timeout:.0f}s, e.g. {missing[:5]}")
    in_ivr = sorted(n for n, t in tickets.items() if t.status == "in_ivr")
    if in_ivr:
        problems.append(f"{len(in_ivr)} tickets still in_ivr, e.g. {in_ivr[:5]}")
    stray = sorted(set(tickets) - set(by_number) - set(known))
    if stray:
        problems.append(f"{len(stray)} stored tickets were handed to no call, e.g. {stray[:5]}")
    wrong = []
    for number, rs in by_number.items():
        t = tickets.get(number)
        if t is None or len(rs) > 1:
            continue
        r = rs[0]
        uniqueids = [u for u, _ in t.calls]
        if t.caller_e164 != r.call.e164:
            wrong.append(f"{number}: caller {t.caller_e164!r}, the call's was {r.call.e164!r}")
        elif uniqueids != [r.call.uniqueid]:
            wrong.append(f"{number}: call records {uniqueids}, the call's uniqueid was {r.call.uniqueid}")
        elif r.kind == "routed" and t.status != "queued":
            wrong.append(f"{number}: routed call, ticket {t.status!r}")
        elif r.kind == "abandoned" and t.status != "abandoned_in_ivr":
            wrong.append(f"{number}: the caller hung up in the IVR, ticket {t.status!r}")
    if wrong:
        problems.append(f"{len(wrong)} stored tickets do not match their call: " + "; ".join(wrong[:5]))
    summary = Summary(len(results), dict(kinds), len(by_number), len(set(by_number) & tickets.keys()), waited)
    assert not problems, f"{summary}\n- " + "\n- ".join(problems)
    return summary
