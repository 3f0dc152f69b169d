"""The process supervisor: restarts what died, keeps the rest running, always stops on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hotline.supervisor import EXIT_CONFIG, CommandChild, ForkedChild, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Running:
    """A Supervisor run in a thread of the test process (signals are not involved)."""

    def __init__(self, children, **kwargs):
        self.supervisor = Supervisor(children, **kwargs)
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.code = self.supervisor.run()

    def __enter__(self):
        # signal.signal only works in the main thread: install the handlers there, run the loop here.
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.supervisor.request_stop()
        self.thread.join(30)


@pytest.fixture(autouse=True)
def _signals_from_main_thread(monkeypatch):
    # Supervisor.run installs signal handlers, which Python allows only in the main thread; the
    # in-thread runs here test the loop, and the subprocess tests below test the signals.
    real = signal.signal

    def maybe(sig, handler):
        if threading.current_thread() is threading.main_thread():
            return real(sig, handler)
        return signal.getsignal(sig)

    monkeypatch.setattr(signal, "signal", maybe)


def test_a_child_killed_is_started_again_and_the_others_keep_running():
    a, b = CommandChild("a", SLEEPER), CommandChild("b", SLEEPER)
    with Running([a, b]) as run:
        first_a, first_b = _wait_for(lambda: a.pid), _wait_for(lambda: b.pid)
        os.kill(first_a, signal.SIGKILL)
        _wait_for(lambda: a.pid not in (None, first_a))
        assert b.pid == first_b and _alive(first_b)
        assert _alive(a.pid)
    assert run.code == 0
    assert not _alive(a.pid) and not _alive(b.pid)


def test_a_child_that_refuses_its_configuration_stops_everything_without_a_restart():
    bad = CommandChild("bad", [sys.executable, "-c", f"raise SystemExit({EXIT_CONFIG})"])
    good = CommandChild("good", SLEEPER)
    with Running([bad, good]) as run:
        run.thread.join(30)
    assert run.code == EXIT_CONFIG
    assert not _alive(good.pid)


def test_forked_children_run_their_target_and_are_restarted():
    marker = []
    child = ForkedChild("forked", lambda: time.sleep(120))
    with Running([child]):
        pid = _wait_for(lambda: child.pid)
        marker.append(pid)
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: child.pid not in (None, pid))
    assert not _alive(child.pid)


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout():
    stubborn = CommandChild("stubborn", [sys.executable, "-c", textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(120)
    """)])
    with Running([stubborn], stop_timeout=0.5):
        _wait_for(lambda: stubborn.pid)
    assert not _alive(stubborn.pid)


SUPERVISED = textwrap.dedent("""
    import sys
    from hotline.supervisor import CommandChild, Supervisor
    children = [CommandChild(f"c{i}", [sys.executable, "-c", "import time; time.sleep(120)"]) for i in range(3)]
    print("pids-file", flush=True)
    code = Supervisor(children, stop_timeout=5).run()
    sys.exit(code)
""")


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(")")[-1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig, times", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 200)])
def test_the_supervisor_process_always_stops_on_a_signal_however_many_arrive(sig, times):
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout.readline().strip() == b"pids-file"
        children = _wait_for(lambda: len(_children_of(proc.pid)) == 3 and _children_of(proc.pid))
        for _ in range(times):  # a storm of signals, some landing while the loop holds whatever it holds
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
        assert proc.wait(timeout=30) == 0
        _wait_for(lambda: not any(_alive(pid) for pid in children))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
