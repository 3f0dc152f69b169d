"""Benchmark: TicketStore.save, the database work of every call (an opening and a closing snapshot).

Prints saves per second and the median cost of one call's two saves, on a fresh SQLite file (the
embedded default) and, with --database-url, on another database. Bounded: --calls saves pairs at most,
--budget seconds at most.

    .venv/bin/python bench/ticket_store.py [--calls 2000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base.db import make_engine, make_session_factory  # noqa: E402
from hotline.migrate import upgrade  # noqa: E402
from orders.snapshot import TicketSnapshot  # noqa: E402
from orders.store import TicketStore  # noqa: E402


def run(url: str, calls: int, budget: float) -> tuple[int, float, list[float]]:
    upgrade(url)
    engine = make_engine(url)
    store = TicketStore(make_session_factory(engine))
    stamp = int(time.time() * 1000) % 10**7
    per_call: list[float] = []
    deadline = time.monotonic() + budget
    started = time.perf_counter()
    done = 0
    for i in range(calls):
        if time.monotonic() > deadline:
            break
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        opening = TicketSnapshot(number=f"1{stamp:07d}{i:06d}", revision=1, caller_raw="13800138000",
                                 caller_e164="+8613800138000", caller_kind="mobile", created_at=now,
                                 uniqueid=f"{stamp}.{i}", call_channel="PJSIP/carrier-1", started_at=now)
        store.save(opening)
        store.save(opening.next(status="queued", category="general", ivr_path="language:1>main:1",
                                outcome="routed"))
        per_call.append(time.perf_counter() - t0)
        done += 1
    elapsed = time.perf_counter() - started
    engine.dispose()
    return done, elapsed, per_call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    urls = [f"sqlite:///{Path(tempfile.mkdtemp(prefix='hotline-bench-')) / 'hotline.db'}"]
    if args.database_url:
        urls.append(args.database_url)
    for url in urls:
        done, elapsed, per_call = run(url, args.calls, args.budget)
        print(f"{url.split(':')[0]:10s} {done} calls (2 saves each) in {elapsed:.2f} s = {2 * done / elapsed:.0f} "
              f"saves/s; one call's saves: median {statistics.median(per_call) * 1000:.2f} ms, "
              f"p99 {statistics.quantiles(per_call, n=100)[98] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
