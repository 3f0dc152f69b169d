"""(a) The database hangs (every PostgreSQL process SIGSTOPped: connections open, nothing answers).

The design: "if the database is unreachable during a call, the call still routes and the ticket is written
later (a durable retry), never silently dropped". A hang is worse than a refusal: nothing times out by
itself.
"""

from __future__ import annotations

import signal

import pytest

from tests.faults.hotline_proc import CallStream, check_invariants, plan_calls, run_calls
from tests.faults.scenario import SETTLE_TIMEOUT, start_hotline

pytestmark = pytest.mark.faults

#: Longest a `hotline agi` may take to stop after SIGTERM while the database hangs: its own grace for calls
#: in progress is 15 s (and no call is in progress here), then it must spool what it could not save and go.
STOP_TIMEOUT = 30.0


def test_database_hangs_mid_stream_every_call_routes_and_every_ticket_is_stored_once(hotline, pg):
    running = start_hotline(hotline)
    stream = CallStream(hotline.agi_port, plan_calls(120, hangup_every=15), threads=8, rate=30).start()
    try:
        stream.wait_done(30, timeout=30)
        pg.hang()
        stream.wait_done(stream.done() + 30, timeout=6)  # the hang lasts at most 6 s
    finally:
        pg.resume()
    results = stream.join()
    check_invariants(pg.url, results, planned=120, known=running.warmup, timeout=SETTLE_TIMEOUT)


def test_sigterm_while_the_database_hangs_spools_pending_saves_and_they_arrive_later(hotline, pg):
    running = start_hotline(hotline)
    try:
        pg.hang()
        # Calls during the hang: they route, and their ticket saves are stuck on the hung database.
        results = run_calls(hotline.agi_port, plan_calls(16), threads=8)
        handed = {r.ticket for r in results if r.ticket}
        running.agi.signal(signal.SIGTERM)
        status = running.agi.wait_exit(STOP_TIMEOUT)
        assert status is not None, (
            f"`hotline agi` still running {STOP_TIMEOUT:.0f}s after SIGTERM while the database hangs "
            f"(its pending ticket saves must go to the spool and the process must exit)")
        spooled = {line.get("number") for line in hotline.spool_lines()}
        assert spooled & handed, (
            f"`hotline agi` exited but no pending ticket save is in the spool under "
            f"{hotline.data_dir / 'spool'} ({len(handed)} tickets handed out during the hang)")
    finally:
        pg.resume()
    # The database is back: a new FastAGI process and a worker (which replays the spool when it starts).
    if running.worker is not None:
        running.worker.stop(timeout=10)
    hotline.start_agi()
    hotline.start_worker()
    check_invariants(pg.url, results, planned=16, known=running.warmup, timeout=SETTLE_TIMEOUT)
