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
  stranger, or a citizen on an X where it holds nothing), through ``Broker.resolve``, in four
  configurations: (1) Redis, receipts batched (a receipt spool given: receipts written off the call path
  by a background thread, virtual_numbers/receipts.py; how the front ends run once services pass a spool);
  (2) Redis, receipts on the call path (no spool: one transaction per resolution, as before); (3) Redis,
  lookup only (the receipt write a no-op on the bench's brokers: what the lookup itself costs); (4) no
  Redis, receipts batched (the database answers every call). The cache is rebuilt and every known pair
  resolved once first; each configuration resolves every unknown pair once before it is measured (its
  refusal is then kept in Redis, as a repeat caller's is). Layouts: 1 thread, 2 threads, ``--processes``
  forked processes (one per core, as the FastAGI server runs). In each layout the configurations take
  turns, round by round (``--rounds`` rounds of at most ``--seconds`` and ``--calls`` each), so that the
  noise of a shared machine falls on all of them alike; figures are medians over the rounds. At the end the
  database must hold exactly one receipt per resolution made with receipts on (warm-ups included).
* the lookup's round trip with hiredis and with redis-py's own Python parser (``hiredis`` installed).
* a slow path: a department calling its group bindings from its phones in turn.

    .venv/bin/python bench/virtual_numbers.py [--bindings 4000] [--citizens 5000] [--departments 20]
                                              [--seconds 1] [--rounds 5] [--calls 100000] [--budget 60]
                                              [--configs 1,2,3,4] [--cache-ttl 900] [--refusal-ttl 900]

Goal: 10,000 resolutions/s with p99 under 2 ms on this 2-core machine. About four minutes at the defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
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
from sqlalchemy import func, insert, select, text  # noqa: E402

import orders.models  # noqa: E402,F401
import virtual_numbers.models  # noqa: E402,F401
import web.tokens  # noqa: E402,F401
from base import metrics  # noqa: E402
from base.db import Base, make_engine, make_session_factory  # noqa: E402
from orders.departments import DepartmentStore  # noqa: E402
from orders.models import Ticket  # noqa: E402
from virtual_numbers.broker import Broker  # noqa: E402
from virtual_numbers.errors import PoolExhausted  # noqa: E402
from virtual_numbers.models import Binding, ResolutionRecord, VirtualNumber  # noqa: E402
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


@dataclass(frozen=True)
class Config:
    """How the bench's brokers are built for one set of runs."""

    name: str
    redis: bool  # False: redis=None, the database answers every call
    receipts: str  # "batched" (a receipt spool: written off the call path), "call path" (no spool), "none"
    interval: float | None = None  # batched: seconds between the writer's batches (None: its default)

    def options(self, spool: Path) -> dict:
        if self.receipts != "batched":
            return {}
        return {"receipt_spool": spool, "receipt_options": {} if self.interval is None else {"interval": self.interval}}


CONFIGS = (
    Config("Redis, receipts batched", True, "batched"),  # Broker.resolve as the front ends get it (with a spool)
    Config("Redis, receipts on the call path", True, "call path"),  # before: one transaction per resolution
    Config("Redis, lookup only", True, "none"),  # the receipt write a no-op: what the lookup itself costs
    Config("database only, receipts batched", False, "batched"),  # redis=None: what Redis buys
)


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


@dataclass
class Rounds:
    """The runs of one configuration in one layout."""

    runs: list[Run]
    resolved: int = 0  # resolutions made with receipts on, warm-ups included
    drain: float = 0.0  # seconds closing its brokers took (writing what was still queued)

    def median(self, value) -> float:
        return statistics.median(value(run) for run in self.runs)

    @property
    def rate(self) -> float:
        return self.median(lambda run: run.rate)

    @property
    def p99(self) -> float:
        return self.median(lambda run: quantile(run.all, 0.99))

    @property
    def p50(self) -> float:
        return self.median(lambda run: quantile(run.all, 0.5))

    @property
    def known_p99(self) -> float:
        return self.median(lambda run: quantile(run.known, 0.99))

    @property
    def unknown_p99(self) -> float:
        return self.median(lambda run: quantile(run.unknown, 0.99) if run.unknown else 0.0)

    @property
    def wrong(self) -> int:
        return sum(run.wrong for run in self.runs)

    @property
    def calls(self) -> int:
        return sum(run.calls for run in self.runs)

    def sources(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for run in self.runs:
            for key, n in run.sources.items():
                out[key] = out.get(key, 0) + n
        return out


@dataclass
class Layout:
    name: str
    threads: int  # threads of this process sharing one broker per configuration (0: processes instead)
    processes: int  # forked processes, each with its own brokers


def source_counts() -> dict[tuple[str, str], float]:
    """Resolutions so far by (outcome, source), from the broker's metric."""
    reg = metrics.registry()
    out = {}
    for metric in reg.collect():
        if metric.name == "hotline_virtual_resolutions":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels.get("outcome", ""), sample.labels.get("source", ""))
                    out[key] = out.get(key, 0) + sample.value
    return out


def counts_since(before: dict) -> dict:
    after = source_counts()
    return {key: n - before.get(key, 0) for key, n in after.items() if n - before.get(key, 0)}


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
    broker.receipt_writer.record = lambda *args, **kwargs: None  # the instance's receipt write skipped


#: The cache's lifetimes for every broker of the resolution runs (--cache-ttl, --refusal-ttl).
TTLS: dict[str, int] = {}


def make_broker(session_factory, redis_client, prefix: str, config: Config, spool: Path) -> Broker:
    broker = Broker(session_factory, redis_client if config.redis else None,
                    key_prefix=prefix if config.redis else prefix + "unused:", **config.options(spool), **TTLS)
    if config.receipts == "none":
        lookup_only(broker)
    return broker


def warm(broker: Broker, unknown: list[Call], seq: list[Call]) -> int:
    """Connections, statement caches, and every unknown pair once (their refusals cached, as a repeat
    caller's are); returns how many resolutions that made."""
    resolve_loop(broker, unknown, time.perf_counter(), 60.0)
    resolve_loop(broker, seq[:300], time.perf_counter(), 60.0)
    return len(unknown) + min(300, len(seq))


def receipt_rows(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(ResolutionRecord)) or 0


def share(seq: list[Call], index: int, parts: int) -> list[Call]:
    return seq[index * len(seq) // parts:(index + 1) * len(seq) // parts]


def rounds_in_threads(world: World, redis_client, prefix: str, spools: list[Path], configs: list[Config],
                      unknown: list[Call], seq: list[Call], rounds: int, seconds: float,
                      threads: int) -> list[Rounds]:
    """``threads`` threads of this process share one broker per configuration (its connection pools, its
    receipt writer), as a server's do; the configurations take turns, round by round (so that the noise
    of a shared machine falls on all of them alike)."""
    brokers = [make_broker(world.session_factory, redis_client, prefix, c, spool) for c, spool in zip(configs, spools)]
    out = [Rounds([]) for _ in configs]
    for k, (config, broker) in enumerate(zip(configs, brokers)):
        made = warm(broker, unknown, share(seq, k, len(configs)))
        out[k].resolved += made if config.receipts != "none" else 0
    for r in range(rounds):
        for k, (config, broker) in enumerate(zip(configs, brokers)):
            part = share(share(seq, k, len(configs)), r, rounds)
            before = source_counts()
            results: list = [None] * threads
            barrier = threading.Barrier(threads + 1)
            begin = [0.0]

            def worker(i: int) -> None:
                barrier.wait()
                results[i] = resolve_loop(broker, part[i::threads], begin[0], seconds)

            workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            begin[0] = time.perf_counter()
            barrier.wait()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - begin[0]
            run = Run(sum(len(kn) + len(un) for kn, un, _ in results), elapsed,
                      [t for kn, _, _ in results for t in kn], [t for _, un, _ in results for t in un],
                      sum(w for _, _, w in results), counts_since(before))
            out[k].runs.append(run)
            out[k].resolved += run.calls if config.receipts != "none" else 0
    for k, broker in enumerate(brokers):
        started = time.perf_counter()
        broker.close()
        out[k].drain = time.perf_counter() - started
    return out


def rounds_in_processes(world: World, redis_url: str, prefix: str, spools: list[Path], configs: list[Config],
                        unknown: list[Call], seq: list[Call], rounds: int, seconds: float,
                        processes: int) -> list[Rounds]:
    """``processes`` forked processes, each with its own engine, Redis client and one broker per
    configuration (a FastAGI server runs one process per core); the configurations take turns, round by
    round."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go = [[ctx.Event() for _ in configs] for _ in range(rounds)]
    ready = ctx.Queue()
    out_queue = ctx.Queue()

    def child(p: int) -> None:
        try:
            engine = make_engine(world.url)
            client = redis_lib.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
            session_factory = make_session_factory(engine)
            brokers = [make_broker(session_factory, client, prefix, c, spool) for c, spool in zip(configs, spools)]
            made = [warm(broker, unknown[p::processes], share(seq, k, len(configs))[p::processes])
                    for k, broker in enumerate(brokers)]
            ready.put(p)
            for r in range(rounds):
                for k, broker in enumerate(brokers):
                    if not go[r][k].wait(120):
                        raise TimeoutError("the parent did not start the round")
                    part = share(share(seq, k, len(configs)), r, rounds)[p::processes]
                    before = source_counts()
                    started = time.perf_counter()
                    known, unknown_times, wrong = resolve_loop(broker, part, started, seconds)
                    elapsed = time.perf_counter() - started
                    out_queue.put(("run", p, known, unknown_times, wrong, elapsed, counts_since(before)))
                    made[k] += len(known) + len(unknown_times)
            drains = []
            for broker in brokers:
                started = time.perf_counter()
                broker.close()
                drains.append(time.perf_counter() - started)
            out_queue.put(("done", p, made, drains))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            out_queue.put(("failed", p, repr(exc)))
        finally:
            for queue in (ready, out_queue):
                queue.close()
                queue.join_thread()
            os._exit(0)  # no finalizers: they would close the parent's inherited connections

    def receive(timeout: float):
        message = out_queue.get(timeout=timeout)
        if message[0] == "failed":
            raise RuntimeError(f"a resolving process failed: {message[2]}")
        return message

    children = [ctx.Process(target=child, args=(p,)) for p in range(processes)]
    for c in children:
        c.start()
    out = [Rounds([]) for _ in configs]
    done = []
    try:
        for _ in children:
            ready.get(timeout=300)
        for r in range(rounds):
            for k in range(len(configs)):
                go[r][k].set()
                parts = []
                while len(parts) < processes:
                    message = receive(seconds + 120)
                    (parts if message[0] == "run" else done).append(message)
                sources: dict = {}
                for part in parts:
                    for key, n in part[6].items():
                        sources[key] = sources.get(key, 0) + n
                out[k].runs.append(Run(sum(len(p[2]) + len(p[3]) for p in parts), max(p[5] for p in parts),
                                       [t for p in parts for t in p[2]], [t for p in parts for t in p[3]],
                                       sum(p[4] for p in parts), sources))
        while len(done) < processes:
            done.append(receive(120))
    finally:
        for c in children:
            c.join(timeout=30)
            if c.is_alive():
                c.kill()
    for k, config in enumerate(configs):
        out[k].resolved = sum(message[2][k] for message in done) if config.receipts != "none" else 0
        out[k].drain = max(message[3][k] for message in done)
    return out


def parser_clients(redis_url: str) -> dict[str, object] | None:
    """Two Redis clients: redis-py's default (hiredis when installed) and one forced onto redis-py's own
    Python parser and packer; None when hiredis is not installed (nothing to compare)."""
    from redis.connection import HIREDIS_AVAILABLE, PythonRespSerializer  # bench-only: the parsers compared

    if not HIREDIS_AVAILABLE:
        return None
    from redis._parsers import _RESP2Parser, _RESP3Parser  # bench-only: redis-py's own parsers

    class PythonParsed(redis_lib.Connection):
        def __init__(self, **kwargs):
            kwargs["parser_class"] = _RESP3Parser if str(kwargs.get("protocol", 3)) == "3" else _RESP2Parser
            super().__init__(**kwargs)

        def _construct_command_packer(self, packer):
            return PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)

    python = redis_lib.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    python.connection_pool.connection_class = PythonParsed
    return {"hiredis": redis_lib.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2),
            "redis-py's Python parser": python}


def compare_parsers(world: World, redis_url: str, prefix: str, known: list[Call], rounds: int,
                    seconds: float) -> str:
    clients = parser_clients(redis_url)
    if clients is None:
        return "hiredis is not installed: redis-py parses replies in Python"
    brokers = {}
    for name, client in clients.items():
        brokers[name] = make_broker(world.session_factory, client, prefix, CONFIGS[2], Path("unused"))
        resolve_loop(brokers[name], known[:300], time.perf_counter(), 30.0)
    out = {name: Rounds([]) for name in brokers}
    for r in range(rounds):
        for name, broker in brokers.items():
            part = share(known, r, rounds)
            before = source_counts()
            started = time.perf_counter()
            kn, un, wrong = resolve_loop(broker, part, started, seconds)
            out[name].runs.append(Run(len(kn) + len(un), time.perf_counter() - started, kn, un, wrong,
                                      counts_since(before)))
    for client in clients.values():
        client.close()
    (h, hr), (p, pr) = out.items()
    return (f"{h} {hr.rate:,.0f}/s, p50 {hr.p50 * 1000:.3f} ms, p99 {hr.p99 * 1000:.2f} ms; {p} {pr.rate:,.0f}/s, p50 "
            f"{pr.p50 * 1000:.3f} ms, p99 {pr.p99 * 1000:.2f} ms: hiredis {hr.rate / pr.rate:.2f}x the calls/s")


def describe(rounds: Rounds) -> str:
    sources = rounds.sources()
    connected = sum(n for (outcome, _), n in sources.items() if outcome == "connected")
    from_redis = sum(n for (_, source), n in sources.items() if source == "cache")
    refusals = sum(n for (outcome, _), n in sources.items() if outcome != "connected")
    refusals_cached = sum(n for (outcome, source), n in sources.items() if outcome != "connected" and source == "cache")
    rates = [run.rate for run in rounds.runs]
    line = (f"{rounds.rate:7,.0f} calls/s ({min(rates):,.0f}-{max(rates):,.0f}), p50 {rounds.p50 * 1000:.2f} ms, "
            f"p99 {rounds.p99 * 1000:.2f} ms (known {rounds.known_p99 * 1000:.2f}, unknown "
            f"{rounds.unknown_p99 * 1000:.2f}); {rounds.calls:,} calls, {from_redis / max(1, rounds.calls):.0%} "
            f"answered from Redis ({connected:,.0f} connected, {refusals_cached:,.0f} of {refusals:,.0f} refusals "
            f"cached)")
    if rounds.resolved:
        line += f"; {rounds.drain * 1000:.0f} ms to write what was queued at close"
    return line + (f"; {rounds.wrong} WRONG answers" if rounds.wrong else "")


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
    ap.add_argument("--seconds", type=float, default=1.0, help="length of each resolution round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per configuration and layout (medians reported)")
    ap.add_argument("--calls", type=int, default=100_000, help="resolutions per round at most")
    ap.add_argument("--configs", default="all", help="comma-separated numbers (1-4) of the configurations to run")
    ap.add_argument("--cache-ttl", type=int, default=900,
                    help="seconds a binding's entry lives in Redis (Broker's cache_ttl; its default: 300)")
    ap.add_argument("--refusal-ttl", type=int, default=900,
                    help="seconds a refusal is kept in Redis (Broker's refusal_ttl; its default: 30)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds each capacity fill may take at most")
    ap.add_argument("--bind-threads", type=int, default=2, help="threads binding the load's tickets")
    ap.add_argument("--processes", type=int, default=2, help="processes of the multi-process runs (0: none)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--database-url", default=DEFAULT_URL)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = ap.parse_args()
    if not 1 <= args.departments <= 999 or not 1 <= args.pool <= 99_999 or args.bindings < 10 \
            or args.citizens < 10 or not 0 < args.seconds <= 600 or args.calls < 100 \
            or not 1 <= args.bind_threads <= 16 or not 0 <= args.processes <= 16 or not 1 <= args.rounds <= 50 \
            or not 1 <= args.cache_ttl <= 86_400 or not 0 <= args.refusal_ttl <= 86_400:
        raise SystemExit("out of range: see --help")

    # The broker logs a warning per refused binding (thousands here) and per Redis failure.
    logging.getLogger("virtual_numbers").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    load = make_load(args, rng)
    redis_client = redis_lib.Redis.from_url(args.redis_url, socket_timeout=2, socket_connect_timeout=2)
    redis_client.ping()
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    worlds: list[World] = []
    spool_dir: Path | None = None
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
        TTLS.update(cache_ttl=args.cache_ttl, refusal_ttl=args.refusal_ttl)
        fast = world.broker(redis_client, prefix, **TTLS)  # the fills' cache, seen by a fresh broker
        rebuilt = fast.rebuild_cache()
        lookup_only(fast)
        warm_refused = sum(fast.resolve(c.caller, c.x, c.extension).refused for c in known)  # every pair once
        print(f"resolutions: {len(known):,} known pairs (both directions of {len(known) // 2:,} live bindings; "
              f"the department from one phone of its group, keying the extension of an extension binding) and "
              f"{len(unknown):,} unknown ones ({UNKNOWN_SHARE:.0%} of the calls); cache rebuilt with {rebuilt:,} "
              f"bindings, then every known pair resolved once ({warm_refused} refused); before each configuration "
              f"every unknown pair resolved once; entries kept {args.cache_ttl} s, refusals {args.refusal_ttl} s "
              f"(longer than the run: the bench's pairs, all first seen at once, would otherwise all expire at once "
              f"and go to the database together; the database path is configuration 4); caller and X "
              f"in E.164, no call id (the broker makes one); {args.rounds} rounds per configuration and layout, each "
              f"at most {args.seconds:g} s and {args.calls:,} calls; figures are medians over the rounds (range of "
              f"the rates in brackets)")
        chosen = list(CONFIGS) if args.configs == "all" else [CONFIGS[int(n) - 1] for n in args.configs.split(",")]
        layouts = [Layout("1 thread", 1, 0), Layout("2 threads", 2, 0)] + (
            [Layout(f"{args.processes} processes", 0, args.processes)] if args.processes else [])
        spool_dir = Path(tempfile.mkdtemp(prefix="bench-vn-"))
        results: dict[tuple[str, str], Rounds] = {}
        rows_before = receipt_rows(world.session_factory)
        for layout in layouts:
            seq = sequence(known, unknown, args.calls * args.rounds * len(chosen), rng)
            spools = [spool_dir / f"receipts-{layout.name.replace(' ', '-')}-{k}.jsonl" for k in range(len(chosen))]
            if layout.processes:
                measured = rounds_in_processes(world, args.redis_url, prefix, spools, chosen, unknown, seq, args.rounds,
                                               args.seconds, layout.processes)
            else:
                measured = rounds_in_threads(world, redis_client, prefix, spools, chosen, unknown, seq, args.rounds,
                                             args.seconds, layout.threads)
            print(f"  {layout.name}")
            for config, rounds in zip(chosen, measured):
                results[(config.name, layout.name)] = rounds
                print(f"    {config.name:<33} {describe(rounds)}", flush=True)
        rows = receipt_rows(world.session_factory) - rows_before
        resolved = sum(r.resolved for r in results.values())
        left = [path.name for path in spool_dir.glob("*") if path.is_file() and path.stat().st_size
                and not path.name.endswith(".lock")]
        print(f"receipts: {resolved:,} resolutions made with receipts on, {rows:,} receipts in the database "
              f"({'as many: none lost, none twice' if rows == resolved else 'MISMATCH'}); spool files left: "
              f"{', '.join(left) if left else 'none'}")
        print("comparisons (same run, configurations taking turns round by round; medians):")
        names = [config.name for config in chosen]
        for layout in layouts:
            if CONFIGS[0].name not in names:
                break
            new = results[(CONFIGS[0].name, layout.name)]
            for other in names[1:]:
                old = results[(other, layout.name)]
                print(f"    {layout.name:<11} receipts batched vs {other}: {new.rate / old.rate:.2f}x the calls/s; "
                      f"p99 {old.p99 * 1000:.2f} -> {new.p99 * 1000:.2f} ms")
        print("goal: 10,000/s, p99 < 2 ms")
        for name in names:
            if name.startswith("database"):
                continue
            layout = max((lay.name for lay in layouts), key=lambda lay: results[(name, lay)].rate)
            best = results[(name, layout)]
            met = best.rate >= 10_000 and best.p99 < 0.002
            print(f"    {name}: best {best.rate:,.0f}/s ({layout}), p99 {best.p99 * 1000:.2f} ms: "
                  f"{'met' if met else 'NOT met'}")

        print(f"  the round trip's parser (Redis, lookup only, 1 thread, known pairs, {args.rounds} rounds taking "
              f"turns): {compare_parsers(world, args.redis_url, prefix, known, args.rounds, args.seconds)}")

        # A slow path: a group binding's department side calling from its phones in turn (each change of the
        # last caller is written to the database before the answer).
        (alt,) = rounds_in_threads(world, redis_client, prefix, [spool_dir / "slow.jsonl"], [CONFIGS[2]], [],
                                   alternating * max(1, args.calls // max(1, len(alternating))), 1,
                                   min(args.seconds, 2.0), 1)
        print(f"  slow path: the department calling group bindings from its {PHONES_PER_DEPARTMENT} phones in turn "
              f"(lookup only, 1 thread): {describe(alt)}")
        wrong = sum(r.wrong for r in results.values()) + alt.wrong
        checked = sum(r.calls for r in results.values()) + alt.calls
        print(f"answers checked: {checked:,} resolutions, " + (f"{wrong} NOT as expected" if wrong else
              "all as expected (known pairs connected, unknown pairs refused)"))
        print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"run took {time.perf_counter() - run_started:.0f} s")
    finally:
        for w in worlds:
            w.drop()
        if spool_dir is not None:
            shutil.rmtree(spool_dir, ignore_errors=True)
        keys = list(redis_client.scan_iter(prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            redis_client.delete(*keys[i:i + 1000])
        redis_client.close()


if __name__ == "__main__":
    main()
