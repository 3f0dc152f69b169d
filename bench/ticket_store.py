"""Benchmark: TicketStore.save, the database work of every call (an opening and a closing snapshot).

Prints saves per second and the median cost of one call's two saves, on a fresh SQLite file (the
embedded default) and, with --database-url, on another database. Bounded: --calls saves pairs at most,
--budget seconds at most.

Then the writer's way under load: batches of 32 openings, then their 32 closings, each batch in one
transaction. ``save_many`` (set-wise: a statement per kind of write for the batch) against the same
batches applied snapshot by snapshot in one transaction (what save_many did before, and still does for
a batch holding two revisions of one ticket), in turns; medians of the per-call cost.

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


def run_batches(url: str, calls: int, budget: float, size: int = 32) -> dict[str, list[float]]:
    """Per-call cost (two saves) of save_many and of the snapshot-by-snapshot baseline, batch by batch."""
    upgrade(url)
    engine = make_engine(url)
    store = TicketStore(make_session_factory(engine))
    stamp = int(time.time() * 1000) % 10**7

    def one_by_one(batch):  # the baseline: the store's per-snapshot path, in one transaction per batch
        with engine.begin() as conn:
            for snapshot in batch:
                store._apply(conn, snapshot)

    ways = {"save_many": store.save_many, "one by one": one_by_one}
    costs: dict[str, list[float]] = {name: [] for name in ways}
    deadline = time.monotonic() + budget
    for round_ in range(max(1, calls // size)):
        if time.monotonic() > deadline:
            break
        for w, (name, save) in enumerate(ways.items()):
            now = datetime.now(timezone.utc)
            openings = [TicketSnapshot(number=f"2{w}{stamp:07d}{round_:04d}{i:03d}", revision=1,
                                       caller_raw="13800138000", caller_e164="+8613800138000", caller_kind="mobile",
                                       created_at=now, uniqueid=f"{stamp}.{w}.{round_}.{i}",
                                       call_channel="PJSIP/carrier-1", started_at=now) for i in range(size)]
            closings = [s.next(status="queued", category="general", ivr_path="language:1>main:1", outcome="routed")
                        for s in openings]
            t0 = time.perf_counter()
            save(openings)
            save(closings)
            costs[name].append((time.perf_counter() - t0) / size)
    engine.dispose()
    return costs


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
    for url in urls:
        costs = run_batches(url, args.calls, args.budget)
        batched, baseline = (statistics.median(costs[name]) for name in ("save_many", "one by one"))
        print(f"{url.split(':')[0]:10s} batches of 32 calls (openings, then closings), {len(costs['save_many'])} "
              f"rounds: save_many {batched * 1000:.3f} ms a call, snapshot by snapshot {baseline * 1000:.3f} ms "
              f"a call: {baseline / batched:.1f}x")


if __name__ == "__main__":
    main()
