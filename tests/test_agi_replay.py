"""Our AGI channel against real Asterisk's recorded replies.

A recorded session is replayed over a real TCP socket: the test plays Asterisk (it sends the
recorded ``agi_*`` block and, for every command the server sends, checks it is the recorded one and
answers with the recorded reply lines). The handler sends the recorded commands through
``HotlineAGI`` and we check how each reply was understood.
"""

from __future__ import annotations

import socket
import threading

import pytest
from asterisk import agi as pyst

from tests.agi_fixtures import RecordedSession, load_sessions
from agi_scripts.channel import ChannelHungUp, CommandFailed, ConnectionClosed
from agi_scripts.registry import HandlerRegistry
from agi_scripts.server import FastAGIServer, ServerLimits


def _cut_pipelining(session: RecordedSession) -> RecordedSession:
    # The recording's last test pipelines a command during STREAM FILE; one-command-at-a-time
    # servers never do that, so the replay stops before it.
    for i, (kind, line) in enumerate(session.exchange):
        if kind == "send" and line == 'STREAM FILE demo-congrats "#"':
            session.exchange = session.exchange[:i] + [("server_eof", ""), ("recv", "HANGUP"), ("asterisk_eof", "")]
    return session


def _replayable() -> list[RecordedSession]:
    sessions = []
    for name in ("fastagi-commands.txt", "fastagi-dtmf.txt", "fastagi-hangup.txt", "fastagi-failures.txt",
                 "fastagi-route-sip.txt", "fastagi-missing-sounds.txt"):
        for s in load_sessions(name):
            if any(kind == "send" for kind, _ in s.exchange):
                sessions.append(_cut_pipelining(s))
    return sessions


SESSIONS = _replayable()


class ReplayHandler:
    """Sends the recorded commands; records what each reply became."""

    def __init__(self, session: RecordedSession):
        self.commands = [line for kind, line in session.exchange if kind == "send"]
        self.outcomes: list[tuple[str, object]] = []
        self.hung_up_seen = False
        self.done = threading.Event()

    def handle(self, agi) -> None:
        try:
            for command in self.commands:
                try:
                    result = agi.execute(command)
                    self.outcomes.append((command, result))
                except ConnectionClosed as exc:
                    self.outcomes.append((command, exc))
                    return
                except (pyst.AGIError,) as exc:
                    self.outcomes.append((command, exc))
        finally:
            self.hung_up_seen = agi.hung_up
            self.done.set()


def _play_asterisk(address, session: RecordedSession) -> list[str]:
    """Be Asterisk for one recorded session; return the mismatches seen."""
    problems = []
    with socket.create_connection(address, timeout=10) as sock:
        rfile = sock.makefile("rb")
        sock.sendall("".join(line + "\n" for line in session.env + [""]).encode())
        exchange = list(session.exchange)
        awaiting_reply = False
        while exchange:
            kind, line = exchange.pop(0)
            if kind == "recv":
                awaiting_reply = awaiting_reply and line == "HANGUP"
                try:
                    sock.sendall((line + "\n").encode())
                except OSError:
                    break
            elif kind == "send":
                awaiting_reply = True
                got = rfile.readline().decode().rstrip("\n")
                if got != line:
                    problems.append(f"expected command {line!r}, server sent {got!r}")
                    break
            elif kind == "server_eof" and awaiting_reply and exchange and exchange[0][0] == "recv":
                # The recording server closed without waiting for its last reply; ours waits for it.
                replies = []
                while exchange and exchange[0][0] == "recv":
                    replies.append(exchange.pop(0))
                exchange = replies + [("server_eof", "")] + exchange
                awaiting_reply = False
            elif kind == "server_eof":
                got = rfile.readline()
                if got:
                    problems.append(f"expected the server to half-close, it sent {got!r}")
                    break
            elif kind == "asterisk_eof":
                sock.shutdown(socket.SHUT_WR)
                break
    return problems


def _recorded_reply(session: RecordedSession, index: int) -> list[str]:
    """The lines Asterisk sent after the index-th command, up to the next command."""
    seen = -1
    out: list[str] = []
    for kind, line in session.exchange:
        if kind == "send":
            seen += 1
            if seen > index:
                break
        elif kind == "recv" and seen == index:
            out.append(line)
    return out


@pytest.mark.parametrize("session", SESSIONS, ids=[s.title[:40] for s in SESSIONS])
def test_recorded_session_replays_and_every_reply_is_understood(session):
    handler = ReplayHandler(session)
    registry = HandlerRegistry()
    script = [l for l in session.env if l.startswith("agi_network_script:")][0].split(": ", 1)[1].split("?")[0]
    registry.register(script, handler)
    server = FastAGIServer(registry, "127.0.0.1", 0, ServerLimits(read_timeout=5, drain_timeout=1))
    server.start()
    try:
        problems = _play_asterisk(server.address, session)
        assert handler.done.wait(10)
    finally:
        server.shutdown(grace=5)
    assert problems == []

    for i, (command, outcome) in enumerate(handler.outcomes):
        reply = [l for l in _recorded_reply(session, i) if l != "HANGUP"]
        if not reply:  # Asterisk had closed: the command could not be answered
            assert isinstance(outcome, ConnectionClosed), (command, outcome)
            continue
        first = reply[0]
        if first.startswith("200 result=-1"):
            assert isinstance(outcome, (CommandFailed, ChannelHungUp)), (command, outcome)
        elif first.startswith("200"):
            assert isinstance(outcome, dict), (command, outcome)
            value = first.split("result=", 1)[1].split(" ", 1)[0]
            assert outcome["result"][0] == value
            if "(" in first:
                assert outcome["result"][1] == first[first.index("(") + 1:first.rindex(")")]
            if "endpos=" in first:
                assert outcome["endpos"][0] == first.rsplit("endpos=", 1)[1]
        elif first.startswith("511"):
            assert isinstance(outcome, ChannelHungUp), (command, outcome)
        elif first.startswith("510"):
            assert isinstance(outcome, pyst.AGIInvalidCommand), (command, outcome)
        elif first.startswith("520"):
            assert isinstance(outcome, pyst.AGIUsageError), (command, outcome)
            assert "End of proper usage" not in str(outcome)
        else:  # pragma: no cover - a reply kind the fixtures don't have
            pytest.fail(f"unexpected recorded reply {first!r}")
    recorded_hangup = any(kind == "recv" and (line == "HANGUP" or line.startswith("511"))
                          for kind, line in session.exchange)
    if any(isinstance(o, ChannelHungUp) for _, o in handler.outcomes):
        assert recorded_hangup


def test_dtmf_recording_results_read_as_keys():
    session = load_sessions("fastagi-dtmf.txt")[0]
    handler = ReplayHandler(session)
    _replay(session, "dtmf", handler)
    results = {cmd: out["result"] for cmd, out in handler.outcomes if isinstance(out, dict)}
    assert results["GET DATA beep 5000 1"] == ("1", "")
    assert results["GET DATA beep 5000 10"] == ("234", "")
    assert results["GET DATA beep 2000 4"] == ("", "timeout")
    assert results["GET DATA beep 3000 4"] == ("5", "timeout")
    assert results["WAIT FOR DIGIT 5000"][0] in ("55", "42")


# --- GET DATA's -1: a missing sound on a live channel, or a caller who hung up ---------------------------

DEAD = "511 Command Not Permitted on a dead channel or intercept routine"  # as recorded, for any refused command


def _recorded(name: str, title: str) -> RecordedSession:
    return next(s for s in load_sessions(name) if title in s.title)


def _reply_to(session: RecordedSession, command: str) -> list[tuple[str, str]]:
    """The recorded command and the lines Asterisk sent after it, up to the next command."""
    at = session.exchange.index(("send", command))
    out = [session.exchange[at]]
    for kind, line in session.exchange[at + 1:]:
        if kind != "recv":
            break
        out.append((kind, line))
    return out


def _get_data_then_status(name: str, title: str, command: str, status_reply: str) -> RecordedSession:
    """A recorded GET DATA and its reply, then the server's CHANNEL STATUS and Asterisk's answer to it."""
    recorded = _recorded(name, title)
    ending = [("server_eof", "")] + ([("recv", "HANGUP")] if "AGISIGHUP=no" not in recorded.title else [])
    return RecordedSession(title=recorded.title, env=recorded.env, exchange=[
        *_reply_to(recorded, command), ("send", "CHANNEL STATUS"), ("recv", status_reply), *ending,
        ("asterisk_eof", "")])


class GetDigitsHandler:
    def __init__(self, sound: str, timeout_ms: int, max_digits: int):
        self.args = (sound, timeout_ms, max_digits)
        self.outcome: object = None
        self.hung_up = None
        self.done = threading.Event()

    def handle(self, agi) -> None:
        try:
            self.outcome = agi.get_digits(*self.args)
        except pyst.AGIError as exc:
            self.outcome = exc
        finally:
            self.hung_up = agi.hung_up
            self.done.set()


def _replay_get_digits(session: RecordedSession, args: tuple[str, int, int]) -> GetDigitsHandler:
    handler = GetDigitsHandler(*args)
    script = [l for l in session.env if l.startswith("agi_network_script:")][0].split(": ", 1)[1]
    _replay(session, script, handler)
    return handler


def _replay(session: RecordedSession, script: str, handler) -> None:
    """Serve ``handler`` as ``script`` and play the recorded Asterisk side of ``session`` against it."""
    registry = HandlerRegistry()
    registry.register(script, handler)
    server = FastAGIServer(registry, "127.0.0.1", 0, ServerLimits(read_timeout=5, drain_timeout=1))
    server.start()
    try:
        assert _play_asterisk(server.address, session) == []
        assert handler.done.wait(10)
    finally:
        server.shutdown(grace=5)


def test_get_data_of_a_missing_sound_on_a_live_channel_is_no_hang_up():
    """fastagi-missing-sounds.txt: -1, no HANGUP line, and CHANNEL STATUS says 6 (up)."""
    recorded = load_sessions("fastagi-missing-sounds.txt")[0]
    assert _reply_to(recorded, "CHANNEL STATUS")[1:] == [("recv", "200 result=6")]
    session = _get_data_then_status("fastagi-missing-sounds.txt", "", "GET DATA hotline/no-such-prompt 3000 1",
                                    "200 result=6")
    handler = _replay_get_digits(session, ("hotline/no-such-prompt", 3000, 1))
    assert isinstance(handler.outcome, CommandFailed) and not isinstance(handler.outcome, ChannelHungUp)
    assert handler.hung_up is False


@pytest.mark.parametrize("title, command", [
    ("case 5: a real SIP caller", "GET DATA beep 10000 4"),  # -1 then HANGUP
    ("case 8: AGISIGHUP=no", "GET DATA beep 10000 4"),  # -1 and never a HANGUP line: only the 511 tells
])
def test_get_data_minus_one_after_a_hang_up_is_a_hang_up(title, command):
    session = _get_data_then_status("fastagi-hangup.txt", title, command, DEAD)
    handler = _replay_get_digits(session, ("beep", 10000, 4))
    assert isinstance(handler.outcome, ChannelHungUp)
    assert handler.hung_up is True
