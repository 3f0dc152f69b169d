"""(c) Redis and the database both down when calls start: every call still gets its ticket number and its
queue, and once both are back every ticket reaches the database (spool on local disk, replayed later)."""

from __future__ import annotations

import pytest

from tests.faults.hotline_proc import check_invariants, plan_calls, run_calls
from tests.faults.scenario import ensure_worker, start_hotline

pytestmark = pytest.mark.faults

#: The worker replays the spool when it starts and then every 60 s: allow for one period and more.
SPOOL_SETTLE_TIMEOUT = 90.0


@pytest.mark.parametrize("redis_server", [True], ids=["aof"], indirect=True)
def test_redis_and_database_down_every_call_gets_a_number_and_a_queue_and_its_ticket_later(
        hotline, pg, redis_server):
    running = start_hotline(hotline)
    redis_server.kill9()
    pg.kill()
    try:
        results = run_calls(hotline.agi_port, plan_calls(40, hangup_every=10), threads=6)
        no_number = [r for r in results if not r.ticket]
        not_routed = [r for r in results if r.kind == "fallback"]
        assert not no_number and not not_routed, (
            f"with Redis and the database down: {len(no_number)} of {len(results)} calls got no ticket number, "
            f"{len(not_routed)} got no queue from the backend (e.g. {(no_number or not_routed)[0].variables})")
    finally:
        pg.start()
        redis_server.start()  # from its AOF: what it held before the crash
    ensure_worker(hotline, running)
    check_invariants(pg.url, results, planned=40, known=running.warmup, timeout=SPOOL_SETTLE_TIMEOUT)
