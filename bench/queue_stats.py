"""Benchmark: the live queue statistics: events taken in per second, and the wallboard's query time as the
history grows to a million events, beside recomputing the same figures from the queue_log on each query.

Starts a throwaway redis-server on a free port (``--redis-url`` uses a running one instead: keys under a
prefix of their own, deleted at the end) and generates ``--events`` queue events (default 1,000,000: about
250,000 calls through the four queues over the ``--days`` days ending now, with abandons, ring-no-answers,
timeouts moving callers on to hotline-zh, transfers) together with the queue_log lines Asterisk writes for
them, in time order. Then, all measured in this run:

* live: the first ``--single`` events taken in one at a time (``apply``: two round trips each), the rest in
  batches of ``--batch`` (``apply_many``, as the AMI link hands over what has arrived); events/s counts the
  statistics' own time only (not the generator's);
* the wallboard query at checkpoints as the history grows (1k, 10k, 100k, 1M events): ``all_figures()``
  and ``abandoned(limit=50)``, median of ``--rounds``;
* the baseline at each checkpoint: the same figures recomputed from the queue_log written so far, in one
  pass in memory (parse every line, fold the calls), as a wallboard without live statistics would on each
  refresh; median of at most ``--baseline-rounds`` (and of what fits in ``--budget`` seconds). Its figures
  are checked equal to the live ones;
* a rebuild after a restart (``rebuild(read_queue_log(file))``) of the whole log, bounded by ``--budget``.

    .venv/bin/python bench/queue_stats.py [--events 1000000] [--batch 200] [--rounds 15] [--small]

``--small`` (20,000 events, fewer rounds) is a smoke run of a few seconds. Goals: 5,000 events/s into the
live statistics on this 2-core machine; the wallboard query under 10 ms at a million events. About four
minutes at the defaults.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis as redis_lib  # noqa: E402

from queues.events import (  # noqa: E402
    AgentMissed,
    CallAnswered,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
)
from queues.queue_log import read_queue_log  # noqa: E402
from queues.statistics import (  # noqa: E402
    BUCKET_SECONDS,
    WINDOW_SECONDS,
    AbandonedCall,
    QueueFigures,
    QueueStatistics,
    rebuild,
)

QUEUES = ["hotline-zh", "urgent-zh", "traffic-zh", "hotline-en"]
WEIGHTS = [5, 2, 2, 1]
TZ = "Asia/Shanghai"
SERVICE, SHORT = 15, 5


# -- the stream: calls as events and as queue_log lines, in time order ----------------------------------------


def stream(total: int, start: float, end: float, rng: random.Random) -> Iterator[tuple[object, str]]:
    """(event, queue_log line) for ``total`` events of calls arriving evenly from ``start`` to ``end``."""
    per_call = 3.0  # events a call makes on average with the shares below (a little under, so the days fill)
    gap = (end - start) / (total / per_call)
    pending: list[tuple[float, int, int, object, str]] = []
    made, n, t = 0, 0, start

    def stay(queue, at, call_id, caller, ticket, step) -> tuple[str, float]:
        put(at, step, CallerJoined(at, queue, call_id, caller, 1, ticket),
            f"{at:.0f}|{call_id}|{queue}|NONE|ENTERQUEUE||{caller}|1")
        roll = rng.random()
        if queue != "hotline-zh" and roll < 0.08:
            put(at + 60, step + 1, CallerGaveUp(at + 60, queue, call_id, 60, "timeout"),
                f"{at + 60:.0f}|{call_id}|{queue}|NONE|EXITWITHTIMEOUT|1|1|60")
            return "moved on", at + 60
        if roll < 0.2:
            wait = rng.randint(0, 120)
            put(at + wait, step + 1, CallerAbandoned(at + wait, queue, call_id, wait, 1, 1),
                f"{at + wait:.0f}|{call_id}|{queue}|NONE|ABANDON|1|1|{wait}")
            return "abandoned", at + wait
        hold, talk, agent = int(rng.expovariate(1 / 12)), rng.randint(20, 600), f"Agent {rng.randint(1, 60)}"
        if hold > 15:
            put(at + 15, step + 1, AgentMissed(at + 15, queue, call_id, agent, 15.0),
                f"{at + 15:.0f}|{call_id}|{queue}|{agent}|RINGNOANSWER|15000")
        put(at + hold, step + 2, CallAnswered(at + hold, queue, call_id, agent, hold, 2),
            f"{at + hold:.0f}|{call_id}|{queue}|{agent}|CONNECT|{hold}|{call_id}9|2")
        done, by = at + hold + talk, rng.choice(("caller", "agent"))
        put(done, step + 3, CallCompleted(done, queue, call_id, agent, hold, talk, by),
            f"{done:.0f}|{call_id}|{queue}|{agent}|COMPLETE{by.upper()}|{hold}|{talk}|1")
        return "answered", done

    def put(at, step, event, line):
        heapq.heappush(pending, (at, n, step, event, line))

    while made < total:
        t += rng.expovariate(1 / gap)
        while pending and (pending[0][0] < int(t) or t >= end) and made < total:
            at, _, _, event, line = heapq.heappop(pending)
            made += 1
            yield event, line + "\n"
        if t >= end:
            if not pending:
                return
            continue
        n += 1
        at, call_id = float(int(t)), f"{int(t)}.{n}"
        caller = f"138{rng.randrange(10 ** 8):08d}"
        how, left = stay(rng.choices(QUEUES, WEIGHTS)[0], at, call_id, caller, "", 0)
        if how == "moved on":
            stay("hotline-zh", left, call_id, caller, "", 10)


# -- the baseline: the figures from the queue_log alone, one pass in memory ---------------------------------


def recompute(path: Path, lines: int, now: float) -> tuple[dict[str, QueueFigures], list[AbandonedCall]]:
    """What a wallboard without live statistics does on each refresh: read the queue_log, fold every call.
    The definitions are queues/statistics.py's."""
    tz = ZoneInfo(TZ)
    today = datetime.fromtimestamp(now, tz).date().isoformat()
    current = int(now // BUCKET_SECONDS * BUCKET_SECONDS)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rolled: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    waiting: dict[str, dict[str, float]] = defaultdict(dict)
    calls: dict[str, dict] = {}
    seen: set[str] = set()
    dropped: list[tuple[float, str]] = []
    days: dict[int, str] = {}

    def day_of(at: float) -> str:
        hour = int(at // 3600)  # Asia/Shanghai has whole-hour offsets
        if hour not in days:
            days[hour] = datetime.fromtimestamp(at, tz).date().isoformat()
        return days[hour]

    def roll(scope: str, at: float, kind: int) -> None:
        if current - WINDOW_SECONDS < int(at // BUCKET_SECONDS * BUCKET_SECONDS) <= current:
            rolled[scope][kind] += 1

    with path.open() as file:
        for e in read_queue_log(line for _, line in zip(range(lines), file)):
            if not isinstance(e, (CallerJoined, CallAnswered, CallerAbandoned, CallerGaveUp, CallCompleted)):
                continue
            q, now_day = e.queue, day_of(e.at) == today
            if now_day:
                seen.add(q)
            c = calls.setdefault(e.call_id, {"queues": set(), "ended": set(), "done": set(), "outcome": False,
                                              "waits": {}, "pending": None, "caller": ""})
            here = counts[q] if now_day else defaultdict(int)
            hotline = counts[""] if now_day else defaultdict(int)
            if isinstance(e, CallerJoined):
                first, new = not c["queues"], q not in c["queues"]
                c["queues"].add(q)
                c["caller"] = e.caller or c["caller"]
                if new:
                    here["offered"] += 1
                    roll(q, e.at, 0)
                if first:
                    hotline["offered"] += 1
                    roll("", e.at, 0)
                if new and c["pending"]:
                    if c["pending"] == today:
                        counts[""]["gave_up"] -= 1
                    c["pending"] = None
                if q not in c["ended"]:
                    waiting[q][e.call_id] = e.at
                continue
            waiting[q].pop(e.call_id, None)
            if isinstance(e, CallCompleted):
                if q not in c["done"]:
                    c["done"].add(q)
                    for scope in (here, hotline):
                        scope["completed"] += 1
                        scope["talk_ms"] += round(e.talk_seconds * 1000)
                continue
            new, first = q not in c["ended"], not c["outcome"]
            c["ended"].add(q)
            if isinstance(e, CallerGaveUp):
                c["waits"][q] = round(e.wait_seconds * 1000)
                if new:
                    here["gave_up"] += 1
                    if first:
                        hotline["gave_up"] += 1
                        c["pending"] = day_of(e.at)
                continue
            c["outcome"] = True
            earlier = sum(w for queue, w in c["waits"].items() if queue != q)
            wait = round((e.hold_seconds if isinstance(e, CallAnswered) else e.wait_seconds) * 1000)
            for scope, counted, is_new, waited in ((q, here, new, wait), ("", hotline, first, wait + earlier)):
                if not is_new:
                    continue
                if isinstance(e, CallAnswered):
                    counted["answered"] += 1
                    counted["hold_ms"] += waited
                    counted["answered_in_target"] += waited <= SERVICE * 1000
                    roll(scope, e.at, 1)
                else:
                    short = waited < SHORT * 1000
                    counted["abandoned"] += 1
                    counted["short_abandoned"] += short
                    if short:
                        roll(scope, e.at, 2)
                    if not scope:
                        dropped.append((e.at, json.dumps([e.call_id, q, c["caller"], "", float(e.at), waited / 1000,
                                                          short], separators=(",", ":"))))

    def ratio(part, whole):
        return min(1.0, part / whole) if whole > 0 else None

    def figures(scope: str, here: list[dict[str, float]]) -> QueueFigures:
        c, (o, a, s) = counts[scope], rolled[scope]
        oldest = min((t for w in here for t in w.values()), default=None)
        return QueueFigures(
            scope, today, sum(len(w) for w in here), max(0.0, now - oldest) if oldest is not None else 0.0,
            c["offered"], c["answered"], c["abandoned"], c["short_abandoned"], c["gave_up"], c["completed"],
            c["answered_in_target"], ratio(c["answered_in_target"], c["offered"] - c["short_abandoned"]),
            c["hold_ms"] / c["answered"] / 1000 if c["answered"] else None,
            c["talk_ms"] / c["completed"] / 1000 if c["completed"] else None, ratio(a, o - s))

    out = {q: figures(q, [waiting[q]]) for q in sorted(seen | {q for q, w in waiting.items() if w})}
    out[""] = figures("", list(waiting.values()))
    latest = [AbandonedCall(*json.loads(m)) for _, m in sorted(dropped, reverse=True)[:50]]
    return out, latest


# -- running it ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throwaway_redis(directory: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=0.5)
    for _ in range(100):  # at most ~10 s
        try:
            client.ping()
            client.close()
            return proc, url
        except redis_lib.ConnectionError:
            if proc.poll() is not None:
                raise SystemExit(f"redis-server exited with {proc.returncode}")
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("redis-server did not answer within 10 s")


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.2f} ms "
            f"(min {min(values) * 1000:.2f}, max {max(values) * 1000:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=5.0, help="the history spans this many days up to now")
    ap.add_argument("--batch", type=int, default=200, help="events per apply_many call")
    ap.add_argument("--single", type=int, default=5000, help="events first taken in one at a time")
    ap.add_argument("--rounds", type=int, default=15, help="wallboard queries per checkpoint")
    ap.add_argument("--baseline-rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds the baseline rounds and the rebuild may take")
    ap.add_argument("--small", action="store_true", help="a quick smoke run: 20,000 events")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--redis-url", default="", help="use this Redis instead of a throwaway redis-server")
    args = ap.parse_args()
    if args.small:
        args.events, args.single, args.rounds, args.baseline_rounds = 20_000, 1000, 5, 2
    if not 1000 <= args.events <= 5_000_000 or not 1 <= args.batch <= 10_000 or not 0 < args.days <= 60 \
            or not 1 <= args.rounds <= 1000 or not 1 <= args.baseline_rounds <= 100 or args.single < 0:
        raise SystemExit("out of range: see --help")

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="bench-queue-stats-")
    proc = None
    url = args.redis_url
    if not url:
        proc, url = throwaway_redis(workdir)
    client = redis_lib.Redis.from_url(url, socket_timeout=30)
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    live = QueueStatistics(client, prefix=prefix + "live:", timezone=TZ, service_seconds=SERVICE,
                           short_abandon_seconds=SHORT, abandoned_kept=200)
    log_path = Path(workdir) / "queue_log"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?")
        print(f"machine: {os.cpu_count()} cores ({cpu}); Python {platform.python_version()}; Redis "
              f"{client.info('server')['redis_version']} ({'throwaway, ' if proc else ''}127.0.0.1); load average "
              f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; client and Redis share the cores")
        end = float(int(time.time()))
        rng = random.Random(args.seed)
        events = stream(args.events, end - args.days * 86400, end, rng)
        checkpoints = sorted({c for c in (1_000, 10_000, 100_000, 1_000_000) if c < args.events} | {args.events})
        print(f"stream: {args.events:,} events of calls through {len(QUEUES)} queues over {args.days:g} days to now; "
              f"the first {min(args.single, args.events):,} taken in one at a time, then in batches of {args.batch}")
        applied, single_time, batch_time, single_done = 0, 0.0, 0.0, 0
        log = log_path.open("w")
        last_at = 0.0
        for checkpoint in checkpoints:
            while applied < checkpoint:
                one = applied < args.single
                chunk = [pair for _, pair in zip(range(1 if one else min(args.batch, checkpoint - applied)), events)]
                if not chunk:
                    break
                log.writelines(line for _, line in chunk)
                batch = [event for event, _ in chunk]
                t0 = time.perf_counter()
                if one:
                    live.apply(batch[0])
                else:
                    live.apply_many(batch)
                spent = time.perf_counter() - t0
                if one:
                    single_time, single_done = single_time + spent, single_done + 1
                else:
                    batch_time += spent
                applied += len(batch)
                last_at = batch[-1].at
            log.flush()
            now = last_at

            def wallboard():
                return live.all_figures(now=now), live.abandoned(limit=50)

            wallboard()  # connections warm
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                figures, latest = wallboard()
                times.append(time.perf_counter() - t0)
            base_times, base = [], None
            budget_end = time.perf_counter() + args.budget / len(checkpoints)
            for _ in range(args.baseline_rounds):
                t0 = time.perf_counter()
                base = recompute(log_path, applied, now)
                base_times.append(time.perf_counter() - t0)
                if time.perf_counter() > budget_end:
                    break
            same = base == (figures, latest)
            hotline = figures[""]
            print(f"{applied:>9,} events ({len(figures) - 1} queues; today {hotline.offered:,} offered, "
                  f"{hotline.waiting} waiting, SL {hotline.service_level or 0:.1%}, 24 h connection rate "
                  f"{hotline.connection_rate_24h or 0:.1%}):")
            print(f"    wallboard query (all_figures + abandoned list): {ms(times)}")
            print(f"    baseline, recomputed from the queue_log:        {ms(base_times)} "
                  f"({statistics.median(base_times) / statistics.median(times):,.0f}x slower, "
                  f"{len(base_times)} rounds); figures {'the same' if same else 'DIFFERENT'}")
            if not same:
                for q in sorted(set(base[0]) | set(figures)):
                    if base[0].get(q) != figures.get(q):
                        print(f"      {q!r}: live {figures.get(q)}\n      {q!r}: baseline {base[0].get(q)}")
        log.close()
        batched = applied - single_done
        single_rate = single_done / single_time if single_time else math.nan
        print(f"live, one event per apply():    {single_rate:>9,.0f} events/s "
              f"({single_done:,} events in {single_time:.2f} s)")
        print(f"live, apply_many({args.batch}):          {batched / batch_time if batch_time else math.nan:>9,.0f} "
              f"events/s ({batched:,} events in {batch_time:.1f} s)")
        memory = client.info("memory")["used_memory"] / 2 ** 20
        print(f"Redis memory after {applied:,} events: {memory:,.0f} MiB (per-call keys expire 2 days after the call)")

        rebuilt = QueueStatistics(client, prefix=prefix + "rebuilt:", timezone=TZ, service_seconds=SERVICE,
                                  short_abandon_seconds=SHORT, abandoned_kept=200)
        deadline = time.perf_counter() + args.budget

        def bounded():
            for i, event in enumerate(read_queue_log(log_path)):
                if i % 1000 == 0 and time.perf_counter() > deadline:
                    return
                yield event

        t0 = time.perf_counter()
        read = rebuild(rebuilt, bounded())
        spent = time.perf_counter() - t0
        whole = read >= applied
        agree = whole and rebuilt.all_figures(now=now) == live.all_figures(now=now) \
            and rebuilt.abandoned(limit=200) == live.abandoned(limit=200)
        print(f"rebuild from the queue_log: {read:,} events in {spent:.1f} s = {read / spent:,.0f} events/s (parse + "
              f"apply){'' if whole else ' (stopped by --budget)'}" + (f"; figures {'agree' if agree else 'DIFFER'}"
                                                                       " with the live ones" if whole else ""))
        rate = batched / batch_time if batch_time else 0
        query = statistics.median(times) * 1000
        print(f"goals: 5,000 events/s: {rate:,.0f}/s {'met' if rate >= 5000 else 'NOT met'}; wallboard query under "
              f"10 ms at {applied:,} events: {query:.2f} ms {'met' if query < 10 else 'NOT met'}")
        print(f"run took {time.perf_counter() - started:.0f} s")
    finally:
        if proc is None:
            keys = list(client.scan_iter(prefix + "*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
