"""A bare FastAGI responder: the dialogue of a routed call, and no work at all (no IVR, no storage).

bench/agi_calls.py measures the hotline's throughput as a share of this one. It is built like the
hotline's server (one listening socket, one process per core, a thread per session) so that the share
shows what the hotline's own work costs, not a different server design.

    .venv/bin/python bench/bare_agi.py --port PORT [--processes N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading

# What the hotline sends for a routed call (language menu, main menu, then the queue).
DIALOGUE = [
    'SET VARIABLE HOTLINE_TICKET "2026112800001"',
    "GET VARIABLE CHANNEL(linkedid)",
    "GET DATA hotline/welcome 5000 1",
    'SET VARIABLE CHANNEL(language) "zh"',
    'SET VARIABLE HOTLINE_LANG "zh-CN"',
    "GET DATA hotline/main-menu 5000 1",
    'SET VARIABLE HOTLINE_PRIORITY "1"',
    'SET VARIABLE HOTLINE_QUEUE "hotline-zh"',
]


def session(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(30)
        rfile = conn.makefile("rb")
        try:
            while rfile.readline(8192) not in (b"\n", b""):  # the agi_* block
                pass
            for command in DIALOGUE:
                conn.sendall(command.encode() + b"\n")
                if not rfile.readline(8192):
                    return
            conn.shutdown(socket.SHUT_WR)
            while rfile.readline(8192):  # Asterisk's last HANGUP
                pass
        except OSError:
            pass


def serve(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=session, args=(conn,), daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve(listener)
        children.append(pid)

    def stop(*_):
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main()
