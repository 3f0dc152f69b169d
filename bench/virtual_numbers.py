"""Benchmark: the masking broker's resolutions per second against real Redis, and what a pool of 100 carries.

Runs against the local PostgreSQL (a schema of its own, created and dropped) and the local Redis (keys
under a prefix of its own, deleted at the end) and prints, all measured in this run:

* capacity: a load of open confidential tickets (``--bindings``, default 4,000) of ``--citizens``
  citizens (default 5,000; most call once, a few dozens of times) over ``--departments`` departments
  (default 20, two phones each, skewed: 109 to 659 tickets at the defaults) bound one by one through
  ``Broker.bind`` on a pool of ``--pool`` numbers (default 100), in random arrival order, from
  ``--bind-threads`` threads: (a) pair mode only (extension mode off): every ticket tried; how many bound
  before the first PoolExhausted and in all; (b) then extension mode on, on the same pool: the tickets (a)
  refused tried again; (c) the naive one number per binding, which carries ``--pool``. Each fill is
  bounded by ``--budget`` seconds.
* resolutions: the live bindings so made (pair and extension ones) resolved by random existing
  (caller, X [, extension]) pairs in both directions (the citizen calling X; the department calling X from
  one phone of its group, keying the extension of an extension binding) plus 5 % unknown pairs (a
  stranger, or a citizen on an X where it holds nothing), through ``Broker.resolve``: with Redis (the cache
  rebuilt, then every known pair resolved once, so that known pairs take the fast path) and with
  ``redis=None`` (the database path: the baseline); from 1 thread, 2 threads, and ``--processes`` forked
  processes (one per core, as the FastAGI server runs); each run bounded by ``--seconds`` and ``--calls``.
  ``Broker.resolve`` writes one receipt (a PostgreSQL transaction, virtual_numbers/resolution.py
  Resolver._audit) per call on every path, with or without a call id: "with audit" is ``resolve`` as the
  front ends call it; "lookup only" is the same call with that write replaced by a no-op on the bench's
  broker instances, to show what the lookup itself costs.
* a slow path: a department calling its group bindings from its phones in turn.

    .venv/bin/python bench/virtual_numbers.py [--bindings 4000] [--citizens 5000] [--departments 20]
                                              [--seconds 1.5] [--calls 200000] [--budget 60]

Goal: 10,000 resolutions/s with p99 under 2 ms on this 2-core machine. About two minutes at the defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from bisect import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis as redis_lib  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

import orders.models  # noqa: E402,F401
import virtual_numbers.models  # noqa: E402,F401
import web.tokens  # noqa: E402,F401
from base import metrics  # noqa: E402
from base.db import Base, make_engine, make_session_factory  # noqa: E402
from orders.departments import DepartmentStore  # noqa: E402
from orders.models import Ticket  # noqa: E402
from virtual_numbers.broker import Broker  # noqa: E402
from virtual_numbers.errors import PoolExhausted  # noqa: E402
from virtual_numbers.models import Binding, VirtualNumber  # noqa: E402
from virtual_numbers.views import EXTENSION  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PHONES_PER_DEPARTMENT = 2
UNKNOWN_SHARE = 0.05
DEPARTMENT_SKEW = 0.6  # tickets of the i-th department ~ 1 / i**0.6: 20 departments, 5,000 tickets -> 824 .. 137
CITIZEN_SKEW = 0.5  # tickets of the i-th citizen ~ 1 / i**0.5: most call once, a few dozens of times


def pool_number(i: int) -> str:
    return f"+86755266{i:05d}"  # 0755-2660 0000 ...: Shenzhen fixed lines


def department_phone(d: int, p: int) -> str:
    return f"+867558{3000 + d:04d}{p:03d}"


def citizen_number(i: int) -> str:
    return f"+86138{i:08d}"


def stranger_number(i: int) -> str:
    return f"+86159{i:08d}"


def apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` split by ``weights`` (largest remainders)."""
    scale = total / sum(weights)
    shares = [w * scale for w in weights]
    counts = [int(s) for s in shares]
    for i in sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])[:total - sum(counts)]:
        counts[i] += 1
    return counts


# -- the world: a schema of its own, departments, a pool, open confidential tickets -------------------


@dataclass
class Load:
    departments: dict[str, list[str]]  # code -> phones
    tickets: list[tuple[str, str, str]]  # (ticket number, citizen, department), in arrival order
    per_department: dict[str, int]
    citizens_used: int
    most_per_citizen: int


def make_load(args, rng: random.Random) -> Load:
    codes = [f"dept-{d:03d}" for d in range(args.departments)]
    departments = {code: [department_phone(d, p) for p in range(1, PHONES_PER_DEPARTMENT + 1)]
                   for d, code in enumerate(codes)}
    counts = apportion(args.bindings, [1 / (i + 1) ** DEPARTMENT_SKEW for i in range(len(codes))])
    cum = list(accumulate(1 / (i + 1) ** CITIZEN_SKEW for i in range(args.citizens)))
    order = list(range(args.citizens))
    rng.shuffle(order)  # which numbers are the frequent callers: any
    tickets, per_citizen = [], {}
    for code, n in zip(codes, counts):
        for _ in range(n):
            citizen = citizen_number(order[bisect(cum, rng.random() * cum[-1])])
            per_citizen[citizen] = per_citizen.get(citizen, 0) + 1
            tickets.append((None, citizen, code))
    rng.shuffle(tickets)  # tickets arrive mixed
    tickets = [(f"2026{i:09d}", citizen, code) for i, (_, citizen, code) in enumerate(tickets)]
    return Load(departments, tickets, dict(zip(codes, counts)), len(per_citizen), max(per_citizen.values()))


class World:
    """A fresh PostgreSQL schema with the load's departments, tickets and a pool of numbers."""

    def __init__(self, database_url: str, load: Load, pool: int) -> None:
        self.schema = "bench_vn_" + uuid.uuid4().hex[:10]
        self._admin = make_engine(database_url, statement_timeout=None)
        with self._admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        sep = "&" if "?" in database_url else "?"
        self.url = f"{database_url}{sep}options=-csearch_path%3D{self.schema}"
        self.engine = make_engine(self.url)
        Base.metadata.create_all(self.engine)
        self.session_factory = make_session_factory(self.engine)
        store = DepartmentStore(self.session_factory)
        for code, phones in load.departments.items():
            store.create(code, code, code)
            for phone in phones:
                store.add_phone(code, phone)
        now = datetime.now(timezone.utc)
        rows = [dict(number=number, caller_raw=citizen, caller_e164=citizen, caller_kind="mobile", channel="phone",
                     language="zh-CN", ivr_path="", urgency="normal", confidential=True, status="accepted",
                     department=code, created_at=now - timedelta(days=3), updated_at=now, revision=1)
                for number, citizen, code in load.tickets]
        with self.session_factory.begin() as session:
            for i in range(0, len(rows), 2000):
                session.execute(insert(Ticket), rows[i:i + 2000])
        self.numbers = [pool_number(i) for i in range(1, pool + 1)]

    def broker(self, redis_client, prefix: str, **options) -> Broker:
        return Broker(self.session_factory, redis_client, key_prefix=prefix, **options)

    def drop(self) -> None:
        self.engine.dispose()
        with self._admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self._admin.dispose()


# -- capacity ---------------------------------------------------------------------------------------------


@dataclass
class Fill:
    bound: int = 0
    refused: int = 0
    first_refusal: int | None = None  # bindings made before the first PoolExhausted
    tried: int = 0
    elapsed: float = 0.0
    times: list[float] = field(default_factory=list)
    out_of_time: bool = False
    message: str = ""
    refused_tickets: list = field(default_factory=list)


def fill(broker: Broker, tickets: list[tuple[str, str, str]], budget: float, threads: int) -> Fill:
    """Bind these tickets, in arrival order, from ``threads`` threads; bounded by ``budget`` seconds."""
    out = Fill()
    lock = threading.Lock()
    tickets = iter(tickets)
    started = time.perf_counter()
    deadline = started + budget

    def worker() -> None:
        while True:
            with lock:
                if time.perf_counter() > deadline:
                    out.out_of_time = True
                    return
                ticket = next(tickets, None)
            if ticket is None:
                return
            t0 = time.perf_counter()
            try:
                broker.bind(*ticket)
                refused = None
            except PoolExhausted as exc:
                refused = str(exc)
            spent = time.perf_counter() - t0
            with lock:
                out.times.append(spent)
                out.tried += 1
                if refused is None:
                    out.bound += 1
                else:
                    if out.first_refusal is None:
                        out.first_refusal, out.message = out.bound, refused
                    out.refused += 1
                    out.refused_tickets.append(ticket)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.elapsed = time.perf_counter() - started
    return out


def quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {quantile(values, 0.5) * 1000:.2f} ms, p99 {quantile(values, 0.99) * 1000:.2f} ms"


def report_fill(label: str, f: Fill, broker: Broker) -> None:
    figures = broker.figures()
    print(f"{label}: {f.bound:,} of {f.tried:,} tickets bound, {f.refused:,} refused (PoolExhausted) in "
          f"{f.elapsed:.1f} s{' (stopped by --budget)' if f.out_of_time else ''}")
    if f.first_refusal is not None:
        print(f"    first PoolExhausted after {f.first_refusal:,} bindings: {f.message}")
    print(f"    live bindings {figures.live_bindings:,} on {figures.in_use} of {figures.active} numbers "
          f"({figures.extension_bindings:,} in extension mode; {figures.live_bindings / max(1, figures.active):.1f} "
          f"per number); bind() {ms(f.times)} (last 500: {ms(f.times[-500:])})")


# -- resolutions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    caller: str
    x: str
    extension: str | None
    known: bool  # an existing pair: must connect


def calls_for(world: World, load: Load, rng: random.Random) -> tuple[list[Call], list[Call], list[Call]]:
    """(known pairs, unknown pairs, department calls alternating phones of a group binding)."""
    with world.session_factory() as session:
        live = session.execute(select(Binding.citizen_e164, Binding.department, Binding.department_number,
                                      Binding.mode, Binding.extension, VirtualNumber.number)
                               .join(VirtualNumber, VirtualNumber.id == Binding.virtual_number_id)
                               .where(Binding.ended_at.is_(None))).all()
    known, alternating, held = [], [], set()
    for citizen, code, number_b, mode, extension, x in live:
        held.add((citizen, x))
        known.append(Call(citizen, x, None, True))  # the citizen calls back: no extension needed
        # The department calls from one phone of its group (the officer on the ticket), keying the extension of
        # an extension binding.
        phones = [number_b] if number_b else load.departments[code]
        phone = rng.choice(phones)
        known.append(Call(phone, x, extension if mode == EXTENSION else None, True))
        if len(alternating) < 2000 and mode != EXTENSION and not number_b:
            alternating += [Call(p, x, None, True) for p in phones]
    numbers = world.numbers
    citizens = sorted({c for _, c, _ in load.tickets})
    unknown = []
    while len(unknown) < max(1, round(len(known) * UNKNOWN_SHARE / (1 - UNKNOWN_SHARE))):
        if rng.random() < 0.5:
            unknown.append(Call(stranger_number(rng.randrange(10 ** 8)), rng.choice(numbers), None, False))
        else:
            c, x = rng.choice(citizens), rng.choice(numbers)
            if (c, x) not in held:
                unknown.append(Call(c, x, None, False))
    return known, unknown, alternating


def sequence(known: list[Call], unknown: list[Call], length: int, rng: random.Random) -> list[Call]:
    return [rng.choice(unknown) if rng.random() < UNKNOWN_SHARE else rng.choice(known) for _ in range(length)]


@dataclass
class Run:
    calls: int
    elapsed: float
    known: list[float]
    unknown: list[float]
    wrong: int
    sources: dict[str, float]

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed

    @property
    def all(self) -> list[float]:
        return self.known + self.unknown


def source_counts() -> dict[str, float]:
    reg = metrics.registry()
    out = {}
    for metric in reg.collect():
        if metric.name == "hotline_virtual_resolutions":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    source = sample.labels.get("source", "")
                    out[source] = out.get(source, 0) + sample.value
    return out


def resolve_loop(broker: Broker, calls: list[Call], start: float, seconds: float) -> tuple[list, list, int]:
    """Resolve ``calls`` in turn until they run out or ``seconds`` after ``start`` have passed."""
    known, unknown, wrong = [], [], 0
    resolve, clock, end = broker.resolve, time.perf_counter, start + seconds
    for call in calls:
        t0 = clock()
        answer = resolve(call.caller, call.x, call.extension)
        t1 = clock()
        (known if call.known else unknown).append(t1 - t0)
        if answer.refused == call.known:
            wrong += 1
        if t1 > end:
            break
    return known, unknown, wrong


def lookup_only(broker: Broker) -> None:
    broker.resolver._audit = lambda *args, **kwargs: None  # the instance's audit write skipped


def resolve_run(broker: Broker, seq: list[Call], seconds: float, threads: int, audit: bool) -> Run:
    """``threads`` threads of this process share one broker (its connection pools), as a server's do."""
    if not audit:
        lookup_only(broker)
    before = source_counts()
    results = [None] * threads
    barrier = threading.Barrier(threads + 1)
    begin = [0.0]

    def worker(k: int) -> None:
        barrier.wait()
        results[k] = resolve_loop(broker, seq[k::threads], begin[0], seconds)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    begin[0] = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - begin[0]
    if not audit:
        del broker.resolver._audit
    after = source_counts()
    return Run(sum(len(r[0]) + len(r[1]) for r in results), elapsed, [t for r in results for t in r[0]],
               [t for r in results for t in r[1]], sum(r[2] for r in results),
               {s: after.get(s, 0) - before.get(s, 0) for s in after})


def resolve_processes(url: str, redis_url: str, prefix: str, seq: list[Call], seconds: float, processes: int,
                      audit: bool) -> Run:
    """``processes`` forked processes, each with its own engine, Redis client and broker (a FastAGI server
    runs one process per core). Each resolves its share of ``seq`` after a short warm-up."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    ready = ctx.Queue()
    out = ctx.Queue()

    def child(k: int) -> None:
        try:
            engine = make_engine(url)
            client = (redis_lib.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
                      if redis_url else None)  # "": the database path
            broker = Broker(make_session_factory(engine), client, key_prefix=prefix)
            if not audit:
                lookup_only(broker)
            mine = seq[k::processes]
            resolve_loop(broker, mine[:500], time.perf_counter(), 0.5)  # connections, statement caches
            ready.put(k)
            go.wait(30)
            before = source_counts()
            started = time.perf_counter()
            known, unknown, wrong = resolve_loop(broker, mine, started, seconds)
            elapsed = time.perf_counter() - started
            after = source_counts()
            out.put((known, unknown, wrong, elapsed, {s: after.get(s, 0) - before.get(s, 0) for s in after}))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            out.put(exc)
        finally:
            for queue in (ready, out):
                queue.close()
                queue.join_thread()
            os._exit(0)  # no finalizers: they would close the parent's inherited connections

    children = [ctx.Process(target=child, args=(k,)) for k in range(processes)]
    for c in children:
        c.start()
    for _ in children:
        ready.get(timeout=60)
    go.set()
    results = [out.get(timeout=seconds + 60) for _ in children]
    for c in children:
        c.join(timeout=30)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"a resolving process failed: {failed[0]!r}")
    sources: dict[str, float] = {}
    for r in results:
        for s, n in r[4].items():
            sources[s] = sources.get(s, 0) + n
    return Run(sum(len(r[0]) + len(r[1]) for r in results), max(r[3] for r in results),
               [t for r in results for t in r[0]], [t for r in results for t in r[1]], sum(r[2] for r in results),
               sources)


def describe(run: Run) -> str:
    cache = run.sources.get("cache", 0) / max(1, len(run.known))  # only connect answers come from Redis
    line = (f"{run.rate:7,.0f} calls/s, all {ms(run.all)}; known pairs {ms(run.known)}"
            f"{'; unknown ' + ms(run.unknown) if run.unknown else ''} ({run.calls:,} calls in {run.elapsed:.1f} s, "
            f"{cache:.0%} of the known pairs answered from Redis")
    return line + (f"; {run.wrong} WRONG answers)" if run.wrong else ")")


# -- the machine --------------------------------------------------------------------------------------------


def machine(database_url: str, redis_client) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
            sync = conn.execute(text("SHOW synchronous_commit")).scalar()
    finally:
        engine.dispose()
    info = redis_client.info("server")
    return (f"machine: {os.cpu_count()} cores ({cpu}), load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
            f"Python {platform.python_version()}; PostgreSQL {pg} on 127.0.0.1 (synchronous_commit={sync}); "
            f"Redis {info.get('redis_version')} on 127.0.0.1; client, PostgreSQL and Redis share the cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bindings", type=int, default=4000, help="open confidential tickets to bind (the load)")
    ap.add_argument("--citizens", type=int, default=5000)
    ap.add_argument("--departments", type=int, default=20)
    ap.add_argument("--pool", type=int, default=100, help="virtual numbers in the pool")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of each resolution run")
    ap.add_argument("--calls", type=int, default=200_000, help="resolutions per run at most")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds each capacity fill may take at most")
    ap.add_argument("--bind-threads", type=int, default=2, help="threads binding the load's tickets")
    ap.add_argument("--processes", type=int, default=2, help="processes of the multi-process runs (0: none)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--database-url", default=DEFAULT_URL)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = ap.parse_args()
    if not 1 <= args.departments <= 999 or not 1 <= args.pool <= 99_999 or args.bindings < 10 \
            or args.citizens < 10 or not 0 < args.seconds <= 600 or args.calls < 100 \
            or not 1 <= args.bind_threads <= 16 or not 0 <= args.processes <= 16:
        raise SystemExit("out of range: see --help")

    # The broker logs a warning per refused binding (thousands here) and per Redis failure.
    logging.getLogger("virtual_numbers").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    load = make_load(args, rng)
    redis_client = redis_lib.Redis.from_url(args.redis_url, socket_timeout=2, socket_connect_timeout=2)
    redis_client.ping()
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    worlds: list[World] = []
    run_started = time.perf_counter()
    try:
        print(machine(args.database_url, redis_client))
        sizes = sorted(load.per_department.values(), reverse=True)
        print(f"load: {len(load.tickets):,} open confidential tickets of {load.citizens_used:,} citizens (of "
              f"{args.citizens:,}; the most frequent holds {load.most_per_citizen}), over {args.departments} "
              f"departments of {PHONES_PER_DEPARTMENT} phones holding {', '.join(map(str, sizes[:5]))}, ... "
              f"{sizes[-1]} tickets; pool of {args.pool} numbers")

        # (a) pair mode only: every ticket of the load, in arrival order.
        world = World(args.database_url, load, args.pool)
        worlds.append(world)
        pair_broker = world.broker(redis_client, prefix, extension_mode=False)
        for x in world.numbers:
            pair_broker.add_number(x)
        pair = fill(pair_broker, load.tickets, args.budget, args.bind_threads)
        ceiling = sum(min(n, args.pool) for n in load.per_department.values())
        report_fill("pair mode only (extension mode off)", pair, pair_broker)
        print(f"    (the reuse rule counts a department's side as one party: at most {args.pool} pair bindings per "
              f"department, {ceiling:,} for this load)")

        # (b) then extension mode on: the same pool, the refused tickets bound again.
        ext_broker = world.broker(redis_client, prefix, extension_mode=True)
        ext = fill(ext_broker, pair.refused_tickets, args.budget, args.bind_threads)
        report_fill(f"then extension mode on, the {len(pair.refused_tickets):,} refused tickets again", ext, ext_broker)
        total = pair.bound + ext.bound
        print(f"naive, one number per binding: {args.pool} bindings")
        first = pair.first_refusal if pair.first_refusal is not None else pair.bound
        print(f"capacity of {args.pool} numbers under this load: naive {args.pool}; reuse rule in pair mode "
              f"{pair.bound:,} ({pair.bound / args.pool:.0f}x; the first ticket refused after {first:,}); with "
              f"extension mode {total:,} ({total / args.pool:.0f}x) of {len(load.tickets):,} tickets")

        # Resolutions, on the bindings of (b).
        known, unknown, alternating = calls_for(world, load, rng)
        fast = world.broker(redis_client, prefix)  # the fills' cache, seen by a fresh broker
        database = world.broker(None, prefix + "unused:")
        rebuilt = fast.rebuild_cache()
        lookup_only(fast)
        warm_refused = sum(fast.resolve(c.caller, c.x, c.extension).refused for c in known)  # every pair once
        del fast.resolver._audit
        print(f"resolutions: {len(known):,} known pairs (both directions of {len(known) // 2:,} live bindings; "
              f"the department from one phone of its group, keying the extension of an extension binding) and "
              f"{len(unknown):,} unknown ones ({UNKNOWN_SHARE:.0%} of the calls); cache rebuilt with {rebuilt:,} "
              f"bindings, then every known pair resolved once ({warm_refused} refused); caller and X in E.164, "
              f"no call id (the broker makes one); each run at most {args.seconds:g} s and {args.calls:,} calls")
        seq = sequence(known, unknown, args.calls, rng)
        runs: dict[tuple[bool, str, str], Run] = {}
        layouts = [("1 thread", 1, 0), ("2 threads", 2, 0)] + ([(f"{args.processes} processes", 0, args.processes)]
                                                               if args.processes else [])
        for audit in (True, False):
            for layout, threads, processes in layouts:
                for name, broker in (("Redis", fast), ("database", database)):
                    if processes:
                        runs[(audit, layout, name)] = resolve_processes(
                            world.url, args.redis_url if broker is fast else "", prefix, seq, args.seconds,
                            processes, audit)
                    else:
                        resolve_run(broker, seq[:2000], 0.3, threads, audit)  # connections, statement caches
                        runs[(audit, layout, name)] = resolve_run(broker, seq, args.seconds, threads, audit)
        for audit in (True, False):
            print("  with audit (Broker.resolve as the front ends call it; it writes one receipt per call)" if audit
                  else "  lookup only (the same calls, the broker's receipt write replaced by a no-op)")
            for layout, _, _ in layouts:
                for name in ("Redis", "database"):
                    print(f"    {name:<8} {layout:<11} {describe(runs[(audit, layout, name)])}")
                r, d = runs[(audit, layout, "Redis")], runs[(audit, layout, "database")]
                print(f"    {'':<8} {layout:<11} Redis / database: {r.rate / d.rate:.1f}x the calls/s; p99 "
                      f"{quantile(d.all, 0.99) * 1000:.2f} -> {quantile(r.all, 0.99) * 1000:.2f} ms, known pairs' p99 "
                      f"{quantile(d.known, 0.99) * 1000:.2f} -> {quantile(r.known, 0.99) * 1000:.2f} ms")
        print("goal: 10,000/s, p99 < 2 ms")
        for audit in (True, False):
            layout = max((lay for lay, _, _ in layouts), key=lambda lay: runs[(audit, lay, "Redis")].rate)
            best = runs[(audit, layout, "Redis")]
            met = best.rate >= 10_000 and quantile(best.all, 0.99) < 0.002
            print(f"    Redis, {'with audit' if audit else 'lookup only'}: best {best.rate:,.0f}/s ({layout}), p99 "
                  f"{quantile(best.all, 0.99) * 1000:.2f} ms (known pairs {quantile(best.known, 0.99) * 1000:.2f} ms): "
                  f"{'met' if met else 'NOT met'}")

        # A slow path: a group binding's department side calling from its phones in turn (each change of the
        # last caller is written to the database before the answer).
        alt = resolve_run(fast, alternating * max(1, args.calls // max(1, len(alternating))), min(args.seconds, 2.0),
                          1, False)
        print(f"  slow path: the department calling group bindings from its {PHONES_PER_DEPARTMENT} phones in turn "
              f"(lookup only, 1 thread): {describe(alt)}")
        wrong = sum(run.wrong for run in runs.values()) + alt.wrong
        checked = sum(run.calls for run in runs.values()) + alt.calls
        print(f"answers checked: {checked:,} resolutions, " + (f"{wrong} NOT as expected" if wrong else
              "all as expected (known pairs connected, unknown pairs refused)"))
        print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"run took {time.perf_counter() - run_started:.0f} s")
    finally:
        for w in worlds:
            w.drop()
        keys = list(redis_client.scan_iter(prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            redis_client.delete(*keys[i:i + 1000])
        redis_client.close()


if __name__ == "__main__":
    main()
