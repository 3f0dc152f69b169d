"""Reading the recorded Asterisk transcripts in tests/fixtures/asterisk (copied from shared/fixtures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"


@dataclass
class RecordedSession:
    title: str
    env: list[str] = field(default_factory=list)  # the agi_* lines, without the blank line
    # After the env block: ("recv", line) came from Asterisk, ("send", line) from the server,
    # ("server_eof", "") the server half-closed, ("asterisk_eof", "") Asterisk closed the socket.
    exchange: list[tuple[str, str]] = field(default_factory=list)


def load_sessions(name: str) -> list[RecordedSession]:
    sessions: list[RecordedSession] = []
    current = RecordedSession(title=name)
    in_env = True
    for raw in (FIXTURES / name).read_text().splitlines():
        if raw.startswith("# ==== case"):
            if current.env or current.exchange:
                sessions.append(current)
            current, in_env = RecordedSession(title=raw[7:]), True
            continue
        if raw.startswith("<<< ") or raw == "<<<":
            line = raw[4:]
            if in_env:
                if line == "":
                    in_env = False
                else:
                    current.env.append(line)
            else:
                current.exchange.append(("recv", line))
        elif raw.startswith(">>> "):
            in_env = False
            current.exchange.append(("send", raw[4:]))
        elif "server half-closes" in raw:
            current.exchange.append(("server_eof", ""))
        elif "Asterisk closed the socket" in raw:
            current.exchange.append(("asterisk_eof", ""))
    if current.env or current.exchange:
        sessions.append(current)
    return sessions


def handler_servers():
    """The body of a fixture: ``start(name, handler)`` serves one handler on a free loopback port and
    returns its address; every server started is shut down at the end."""
    from agi_scripts.registry import HandlerRegistry  # here: the transcript readers above need no server code
    from agi_scripts.server import FastAGIServer

    servers = []

    def start(name: str, handler) -> tuple[str, int]:
        registry = HandlerRegistry()
        registry.register(name, handler)
        server = FastAGIServer(registry, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return server.address

    yield start
    for server in servers:
        server.shutdown(grace=5)
