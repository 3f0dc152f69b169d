"""Steps the fault tests share: bring the hotline up, warm it up, and wait on a condition (bounded)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from tests.faults.hotline_proc import Hotline, Service, check_invariants, plan_calls, read_tickets, run_calls

#: How long the checks wait for tickets to reach the database after a fault is lifted. Generous: a
#: deferred write may wait for a job retry (the first ones come after 5 and 15 s).
SETTLE_TIMEOUT = 60.0


@dataclass
class Running:
    agi: Service
    worker: Service | None
    warmup: list[str]  # ticket numbers of the warm-up calls


def start_hotline(hotline: Hotline, worker: bool = True, warmup_calls: int = 3) -> Running:
    """``db upgrade``, ``agi`` (and ``worker``), then a few calls that must route and be stored: the Redis
    ticket counter is seeded and the database pools are warm."""
    hotline.upgrade()
    agi = hotline.start_agi()
    worker_service = hotline.start_worker() if worker else None
    results = run_calls(hotline.agi_port, plan_calls(warmup_calls, start=9000), threads=1)
    try:
        check_invariants(hotline.env["HOTLINE_DATABASE_URL"], results, planned=warmup_calls, timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"warm-up calls, before any fault, failed (the hotline does not serve calls "
                             f"at all; see its logs below): {exc}") from None
    return Running(agi, worker_service, [r.ticket for r in results])


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds passed; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def count_status(database_url: str, status: str) -> int:
    try:
        return sum(1 for t in read_tickets(database_url).values() if t.status == status)
    except Exception:
        return 0


def ensure_worker(hotline: Hotline, running: Running) -> Service:
    """A worker is running (as a process supervisor would see to it): the old one if it is alive."""
    if running.worker is None or not running.worker.alive:
        running.worker = hotline.start_worker()
    return running.worker
