"""Benchmark: how long the next call waits after thousands of idle FastAGI connections close at once.

Idle connections (connected, never finishing their ``agi_*`` block: a scanner, a flood, an Asterisk gone
wrong) are opened against a FastAGI server in a process of its own, then closed all at once, and one
call is placed at that moment; its time to completion is the figure. Prints it for this tree and, as
the baseline measured in the same run, for the FastAGI server of an earlier commit (default: the last
one with a thread per connection from accept() on). Every loop is bounded; traffic stays on 127.0.0.1.

    .venv/bin/python bench/agi_idle_storm.py [--idle 2000] [--runs 3] [--baseline-rev REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import importlib
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE_REV = "e2af4df"  # the FastAGI server with a thread per connection from accept() on
MODULES = ("server", "channel", "protocol")


def serve(package: str, path: str, idle: int) -> None:
    """Server mode (a child process): serve the handler ``probe`` on a free port, print the port."""
    if path:
        sys.path.insert(0, path)
    server_module = importlib.import_module(f"{package}.server")
    from agi_scripts.registry import HandlerRegistry

    class Probe:
        def handle(self, agi):
            agi.set_variable("DONE", "1")

    registry = HandlerRegistry()
    registry.register("probe", Probe())
    limits = server_module.ServerLimits(max_sessions=idle + 100, read_timeout=120, session_timeout=300)
    server = server_module.FastAGIServer(registry, "127.0.0.1", 0, limits)
    print(server.address[1], flush=True)
    server.serve_forever()


def extract_baseline(rev: str, into: Path) -> str | None:
    """The FastAGI modules of ``rev`` as the package ``agi_baseline`` under ``into``; None if git cannot."""
    package = into / "agi_baseline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    metrics_module = "base" if (ROOT / "base" / "metrics.py").exists() else "hotline"
    for name in MODULES:
        try:
            source = subprocess.run(["git", "show", f"{rev}:agi_scripts/{name}.py"], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        source = re.sub(r"\bagi_scripts\.(server|channel|protocol)\b", r"agi_baseline.\1", source)
        source = re.sub(r"^from (hotline|base) import metrics$", f"from {metrics_module} import metrics", source,
                        flags=re.M)
        (package / f"{name}.py").write_text(source)
    return str(into)


def call(port: int, timeout: float) -> float:
    """Seconds one probe call takes to complete (inf when it was not served)."""
    from agi_scripts.simulator import Caller, place_call

    started = time.perf_counter()
    try:
        result = place_call(Caller(script="probe"), "127.0.0.1", port, timeout=timeout)
    except OSError:
        return float("inf")
    return time.perf_counter() - started if result.variables.get("DONE") else float("inf")


def storm(package: str, path: str, idle: int, runs: int, timeout: float) -> list[float]:
    """Per run: the time of the call placed as ``idle`` idle connections close at once."""
    figures = []
    for _ in range(runs):
        proc = subprocess.Popen([sys.executable, __file__, "--serve", package, "--path", path, "--idle", str(idle)],
                                cwd=ROOT, stdout=subprocess.PIPE)
        clients: list[socket.socket] = []
        try:
            port = int(proc.stdout.readline())
            call(port, timeout)  # warm-up
            for i in range(idle):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 2:
                    sock.sendall(b"agi_network: yes\n")  # half start a block they never finish
                clients.append(sock)
            if call(port, timeout) == float("inf"):  # the backlog is FIFO: served means all were accepted
                raise SystemExit(f"{package}: the server did not serve a call beside {idle} idle connections")
            time.sleep(1)  # let the server settle with every idle connection held
            for sock in clients:
                sock.close()
            clients.clear()
            figures.append(call(port, timeout))
        finally:
            for sock in clients:
                sock.close()
            proc.terminate()
            proc.wait(timeout=30)
    return figures


def describe(figures: list[float]) -> str:
    return (f"median {statistics.median(figures):.3f} s, max {max(figures):.3f} s over {len(figures)} runs "
            f"({', '.join(f'{f:.3f}' for f in figures)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=2000, help="idle connections closed at once")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0, help="the longest a probe call may take")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="the commit whose FastAGI server is the baseline")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--serve", metavar="PACKAGE", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.path, args.idle)
        return

    needed = 2 * args.idle + 500  # this process holds the client ends; the server child inherits the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"needs {needed} file descriptors; the hard limit is {hard} (lower --idle)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

    print(f"idle storm: {args.idle} idle connections closed at once, then one call; its time to completion")
    print(f"  this tree:        {describe(storm('agi_scripts', '', args.idle, args.runs, args.timeout))}")
    if args.no_baseline:
        return
    with tempfile.TemporaryDirectory(prefix="agi-baseline-") as tmp:
        path = extract_baseline(args.baseline_rev, Path(tmp))
        if path is None:
            print(f"  baseline {args.baseline_rev}: not measured (git cannot show that commit here)")
            return
        print(f"  baseline {args.baseline_rev}: {describe(storm('agi_baseline', path, args.idle, args.runs, args.timeout))}")


if __name__ == "__main__":
    main()
