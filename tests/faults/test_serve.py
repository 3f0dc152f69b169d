"""(e) ``hotline serve``: one process tree (FastAGI server, web API, worker) that an operator starts and stops.

A child that dies is started again while the others go on; SIGTERM or SIGINT stops the whole tree within a
bounded time and leaves no process behind, even when it arrives (again and again) during start-up.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.hotline_proc import Hotline, Service, plan_calls, proc_cmdline, run_calls
from tests.faults.scenario import wait_until
from tests.servers import children_of, pid_alive, port_accepts

pytestmark = pytest.mark.faults

STOP_TIMEOUT = 40.0  # the FastAGI server's own grace for calls in progress is 15 s; no call is in progress here
START_TIMEOUT = 40.0


def _children(serve: Service) -> dict[int, list[str]]:
    return {pid: proc_cmdline(pid) for pid in children_of(serve.pid) if pid_alive(pid)}


def _role(cmdline: list[str]) -> str | None:
    for role in ("agi", "web", "worker"):
        if role in cmdline[1:]:
            return role
    return None


def _by_role(serve: Service) -> dict[str, int]:
    return {role: pid for pid, cmd in _children(serve).items() if (role := _role(cmd))}


def _start_serve(hotline: Hotline) -> Service:
    serve = hotline.start_serve()
    up = wait_until(lambda: not serve.alive or (
        port_accepts(hotline.agi_port) and port_accepts(hotline.web_port)
        and set(_by_role(serve)) == {"agi", "web", "worker"}), timeout=START_TIMEOUT, interval=0.1)
    assert serve.alive, f"`hotline serve` exited at start-up ({serve.proc.returncode}): {serve.stderr_text()[-3000:]}"
    assert up, f"`hotline serve` not up after {START_TIMEOUT}s: children {_children(serve)}"
    return serve


def _assert_stops(hotline: Hotline, serve: Service, how: str) -> None:
    status = serve.wait_exit(STOP_TIMEOUT)
    assert status is not None, f"`hotline serve` still running {STOP_TIMEOUT:.0f}s after {how}"
    wait_until(lambda: not hotline.tagged_pids(), timeout=5)
    left = {pid: proc_cmdline(pid) for pid in hotline.tagged_pids()}
    assert not left, f"`hotline serve` exited after {how} but left processes behind: {left}"


def test_serve_starts_again_a_worker_killed_with_kill_9_and_the_other_services_go_on(hotline):
    serve = _start_serve(hotline)
    before = _by_role(serve)
    old_worker = before["worker"]
    os.kill(old_worker, signal.SIGKILL)
    restarted = wait_until(lambda: not serve.alive or _by_role(serve).get("worker") not in (None, old_worker),
                           timeout=30, interval=0.1)
    assert serve.alive, (f"`hotline serve` stopped everything when its worker was killed "
                         f"(exit status {serve.proc.returncode})")
    assert restarted, f"no new worker within 30 s: children {_children(serve)}"
    now = _by_role(serve)
    assert now["agi"] == before["agi"] and now["web"] == before["web"], (before, now)
    results = run_calls(hotline.agi_port, plan_calls(3), threads=1)
    assert all(r.kind == "routed" for r in results), [r.variables for r in results]
    serve.signal(signal.SIGTERM)
    _assert_stops(hotline, serve, "SIGTERM")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serve_and_every_child_within_a_bounded_time(hotline, sig):
    serve = _start_serve(hotline)
    results = run_calls(hotline.agi_port, plan_calls(2), threads=1)
    assert all(r.kind == "routed" for r in results), [r.variables for r in results]
    serve.signal(sig)
    _assert_stops(hotline, serve, signal.Signals(sig).name)


@pytest.mark.parametrize("first", ["at_spawn", "at_first_child"])
def test_sigterm_sent_again_and_again_during_start_up_still_stops_serve(hotline, first):
    """SIGTERM again and again (every 10 ms for a second, then every 0.1 s) until ``serve`` exits, from the
    moment it is spawned (Python starting, the migration) or from the moment its first child appears (the
    others still being started)."""
    hotline.upgrade()  # so that start-up is quick and the children come early
    serve = hotline.start_serve()
    if first == "at_first_child":
        wait_until(lambda: not serve.alive or bool(children_of(serve.pid)), timeout=START_TIMEOUT, interval=0.005)
        assert serve.alive, f"`hotline serve` exited before it started a child: {serve.stderr_text()[-3000:]}"
    start = time.monotonic()
    sent = 0
    while serve.alive and time.monotonic() < start + STOP_TIMEOUT:
        serve.signal(signal.SIGTERM)
        sent += 1
        time.sleep(0.01 if time.monotonic() < start + 1 else 0.1)  # dense while the children are started
    _assert_stops(hotline, serve, f"{sent} SIGTERMs during start-up ({first})")
