"""A FastAGI server in a process of its own, for tests that need one (a descriptor limit, a shared socket).

    python tests/agi_server_child.py [--nofile N] [--fd FD]

Serves the handler ``pid`` (sets PID to its process id) on 127.0.0.1, on a port the OS picks or on the
inherited listening socket FD; prints the port on stdout, logs to stderr, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agi_scripts.registry import HandlerRegistry  # noqa: E402
from agi_scripts.server import FastAGIServer, ServerLimits  # noqa: E402


class PidHandler:
    def handle(self, agi):
        agi.set_variable("PID", os.getpid())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nofile", type=int, default=0, help="lower RLIMIT_NOFILE to this many descriptors")
    ap.add_argument("--fd", type=int, default=-1, help="serve on this inherited listening socket")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    registry = HandlerRegistry()
    registry.register("pid", PidHandler())
    limits = ServerLimits(read_timeout=60, session_timeout=120, drain_timeout=1)
    if args.fd >= 0:
        server = FastAGIServer(registry, limits=limits, listener=socket.socket(fileno=args.fd))
    else:
        server = FastAGIServer(registry, "127.0.0.1", 0, limits)
    if args.nofile:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    print(server.address[1], flush=True)
    server.serve_forever()
    server.shutdown(grace=5)


if __name__ == "__main__":
    main()
