"""(d) The FastAGI process is killed (kill -9) while calls are in the IVR.

Their tickets were saved as ``in_ivr`` when the calls started; nobody will ever save them again. Once the
session budget (HOTLINE_AGI_SESSION_TIMEOUT) has passed, the worker must settle them (abandoned in the IVR,
or queued with outcome fallback: the dialplan sent the caller to the default queue), never leave them
``in_ivr`` for ever.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.hotline_proc import CallStream, check_invariants, plan_calls, read_tickets, run_calls
from tests.faults.scenario import SETTLE_TIMEOUT, count_status, start_hotline, wait_until
from tests.servers import children_of

pytestmark = pytest.mark.faults

SESSION_TIMEOUT = 3  # seconds: the session budget of every process (the worker reads it too)
IN_FLIGHT = 16


def test_agi_killed_with_calls_in_the_ivr_no_ticket_stays_in_ivr(hotline_factory, pg):
    hotline = hotline_factory(agi_session_timeout=SESSION_TIMEOUT)
    running = start_hotline(hotline)
    # Callers who take 2 s over each key: all of them are in the menu at once.
    calls = plan_calls(IN_FLIGHT, think=2.0)
    stream = CallStream(hotline.agi_port, calls, threads=IN_FLIGHT, rate=0).start()
    wait_until(lambda: count_status(pg.url, "in_ivr") >= IN_FLIGHT, timeout=10, interval=0.05)
    in_ivr_at_kill = count_status(pg.url, "in_ivr")
    # The processes that serve the calls: `hotline agi` itself when it runs one process, its forked children
    # when it supervises them.
    targets = children_of(running.agi.pid) or [running.agi.pid]
    for pid in targets:
        os.kill(pid, signal.SIGKILL)
    killed = stream.join()
    assert in_ivr_at_kill > 0, "no call was in the IVR when the FastAGI process was killed"
    cut = [r for r in killed if r.kind == "fallback"]
    assert cut, "no call was cut by the kill (they all finished first): the test did not test anything"

    # The FastAGI server comes back (its own supervisor, or here the test standing in for systemd); new calls
    # route as usual.
    if running.agi.wait_exit(2) is not None:
        hotline.start_agi()
    else:
        hotline.wait_port(hotline.agi_port, running.agi)
    after = run_calls(hotline.agi_port, plan_calls(10, start=100), threads=4)

    results = killed + after
    check_invariants(pg.url, results, planned=IN_FLIGHT + 10, known=running.warmup, timeout=SETTLE_TIMEOUT,
                     every_call_routes=False)
    assert all(r.kind == "routed" for r in after), [r.variables for r in after if r.kind != "routed"]
    tickets = read_tickets(pg.url)
    for r in cut:
        if r.ticket:
            t = tickets[r.ticket]
            assert t.status in ("abandoned_in_ivr", "queued"), (r.ticket, t.status)
            assert [outcome for _, outcome in t.calls] in (["abandoned_in_ivr"], ["fallback"]), (r.ticket, t.calls)
