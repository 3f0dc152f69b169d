"""A bare FastAGI responder: the dialogue of a routed call, and no work at all (no IVR, no storage).

bench/agi_calls.py measures the hotline's throughput as a share of this one. It is built like the
hotline's server (one listening socket, one process per core, a thread per session) so that the share
shows what the hotline's own work costs, not a different server design.

    .venv/bin/python bench/bare_agi.py --port PORT [--processes N] [--fixed]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading

# What the hotline sends for a routed call (ticket, language menu, main menu, the route's prompt, then the
# queue), command for command as the hotline's own server sends it: bench/agi_calls.py checks the two against
# each other before it measures. A caller who picks English (key 2) hears the same menus after two more
# commands that switch the language.
OPENING = [
    'SET VARIABLE HOTLINE_TICKET "2026112800001"',
    'GET VARIABLE "CHANNEL(linkedid)"',
    'SET VARIABLE CHANNEL(language) "zh"',
    'SET VARIABLE HOTLINE_LANG "zh-CN"',
    "GET DATA hotline/choose-language 5000 1",
]
TO_ENGLISH = ['SET VARIABLE CHANNEL(language) "en"', 'SET VARIABLE HOTLINE_LANG "en"']
CLOSING = [
    "GET DATA hotline/main-menu 6000 1",
    'STREAM FILE hotline/connecting "" 0',
    'SET VARIABLE HOTLINE_PRIORITY "1"',
    'SET VARIABLE HOTLINE_QUEUE "hotline-zh"',
]
#: The 8-command dialogue this responder sent before it followed the hotline's (no language set before the
#: first menu, no route prompt): ``--fixed`` sends it to every caller, for a comparison with earlier figures.
FIXED = [
    'SET VARIABLE HOTLINE_TICKET "2026112800001"',
    "GET VARIABLE CHANNEL(linkedid)",
    "GET DATA hotline/welcome 5000 1",
    'SET VARIABLE CHANNEL(language) "zh"',
    'SET VARIABLE HOTLINE_LANG "zh-CN"',
    "GET DATA hotline/main-menu 5000 1",
    'SET VARIABLE HOTLINE_PRIORITY "1"',
    'SET VARIABLE HOTLINE_QUEUE "hotline-zh"',
]


def dialogue(language_reply: bytes) -> list[str]:
    """The commands after the language menu, given Asterisk's reply to it (``200 result=2``: English)."""
    return TO_ENGLISH + CLOSING if language_reply.startswith(b"200 result=2") else CLOSING


def session(conn: socket.socket, fixed: bool = False) -> None:
    with conn:
        conn.settimeout(30)
        rfile = conn.makefile("rb")
        try:
            while rfile.readline(8192) not in (b"\n", b""):  # the agi_* block
                pass
            commands = iter(FIXED if fixed else OPENING)
            reply = b""
            for command in commands:
                conn.sendall(command.encode() + b"\n")
                reply = rfile.readline(8192)
                if not reply:
                    return
            for command in ([] if fixed else dialogue(reply)):
                conn.sendall(command.encode() + b"\n")
                if not rfile.readline(8192):
                    return
            conn.shutdown(socket.SHUT_WR)
            while rfile.readline(8192):  # Asterisk's last HANGUP
                pass
        except OSError:
            pass


def serve(listener: socket.socket, fixed: bool = False) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=session, args=(conn, fixed), daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fixed", action="store_true", help="send the earlier fixed 8-command dialogue to every caller")
    args = ap.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve(listener, args.fixed)
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
