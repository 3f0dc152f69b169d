"""One AGI session's command channel: pyst2's command vocabulary over our own transport.

pyst2's ``AGI`` class reads ``sys.stdin``, installs a SIGHUP handler (which fails outside the main
thread) and does not know the ``HANGUP`` line, ``511`` or ``(timeout)`` replies. We keep its
command methods (``get_data``, ``stream_file``, ``set_variable``, ...) and replace the constructor
and the send/receive path.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import BinaryIO

from asterisk import agi as pyst

from agi_scripts.protocol import (
    HANGUP_LINE,
    MAX_ENV_LINES,
    MAX_LINE,
    AGIEnvironment,
    AGIProtocolError,
    Reply,
    parse_env_line,
    parse_reply,
)

log = logging.getLogger("hotline.agi")


class ConnectionClosed(pyst.AGIHangup):
    """Asterisk closed the connection (the caller is gone and the session is over)."""


class ChannelHungUp(pyst.AGIHangup):
    """The caller hung up: Asterisk sent ``HANGUP`` or refused a command on a dead channel (511)."""


class CommandFailed(pyst.AGIAppError):
    """Asterisk answered ``result=-1``: an error (e.g. a missing sound) or a hang-up still to be announced."""

    def __init__(self, command: str, reply: Reply):
        super().__init__(f"{command.split(' ', 1)[0]} failed: {reply.text}")
        self.reply = reply


class AsteriskSilent(pyst.AGIError):
    """No reply from Asterisk within the read timeout."""


class SessionExpired(pyst.AGIError):
    """The session ran past its time budget; the handler must finish now."""


class LineTransport:
    """Newline-framed lines over a pair of binary streams, with an optional socket for timeouts."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, sock: socket.socket | None = None):
        self._rfile = rfile
        self._wfile = wfile
        self._sock = sock
        self.finished = False

    @classmethod
    def over_socket(cls, sock: socket.socket, read_timeout: float) -> "LineTransport":
        sock.settimeout(read_timeout)
        return cls(sock.makefile("rb"), sock.makefile("wb"), sock)

    def read_line(self) -> str:
        try:
            raw = self._rfile.readline(MAX_LINE + 1)
        except (socket.timeout, TimeoutError):
            raise AsteriskSilent("no line from Asterisk within the read timeout") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None
        if not raw:
            raise ConnectionClosed("Asterisk closed the connection")
        if len(raw) > MAX_LINE:
            raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def send_line(self, line: str) -> None:
        if self.finished:
            raise ConnectionClosed("the session was already handed back to the dialplan")
        try:
            self._wfile.write(line.encode("utf-8") + b"\n")
            self._wfile.flush()
        except OSError as exc:
            raise ConnectionClosed(f"cannot send to Asterisk: {exc.strerror or exc}") from None

    def finish(self, drain_timeout: float = 2.0) -> None:
        """Half-close, then read what Asterisk still sends (its last ``HANGUP``) until it closes.

        Asterisk's AGI() returns to the dialplan only now; calling it twice is harmless.
        """
        if self._sock is None or self.finished:
            return
        self.finished = True
        try:
            self._wfile.flush()
            self._sock.shutdown(socket.SHUT_WR)
            self._sock.settimeout(drain_timeout)
            end = time.monotonic() + drain_timeout
            while time.monotonic() < end and self._rfile.readline(MAX_LINE + 1):
                pass
        except OSError:
            pass


def read_environment(transport: LineTransport) -> AGIEnvironment:
    """Read the ``agi_*`` block up to its blank line; bad lines are skipped, never fatal."""
    env = AGIEnvironment()
    for _ in range(MAX_ENV_LINES):
        line = transport.read_line()
        if line == "":
            return env
        if line == HANGUP_LINE:
            continue
        try:
            key, value = parse_env_line(line)
        except AGIProtocolError:
            log.warning("skipping a malformed agi_* line", extra={"event": "agi.bad_env_line"})
            continue
        env.values[key] = value
    raise AGIProtocolError(f"agi_* block longer than {MAX_ENV_LINES} lines")


class HotlineAGI(pyst.AGI):
    """pyst2's AGI commands, safe in any thread, aware of ``HANGUP``, 511, timeouts and a deadline."""

    def __init__(self, transport: LineTransport, env: AGIEnvironment, deadline: float | None = None):
        # pyst.AGI.__init__ is deliberately not called: it installs a SIGHUP handler and reads stdin.
        self.transport = transport
        self.environment = env
        self.env = env.values
        self.deadline = deadline
        self.hung_up = False
        self._got_sighup = False

    def test_hangup(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SessionExpired("the AGI session ran past its time budget")

    def execute(self, command, *args):
        """Send one command and return pyst2's result dict (``{'result': (value, data), ...}``)."""
        self.test_hangup()
        line = " ".join([command.strip(), *map(str, args)]).strip()
        if "\n" in line or "\r" in line:
            raise AGIProtocolError("a command must be a single line")
        log.debug("agi command", extra={"event": "agi.command", "command": line.split(" ", 2)[:2]})
        self.transport.send_line(line)
        reply = self.read_reply()
        if reply.code == 200:
            if reply.result == "-1":
                if self.hung_up:
                    raise ChannelHungUp("the caller hung up")
                raise CommandFailed(line, reply)
            result = {"result": (reply.result, reply.data or "")}
            if reply.endpos is not None:
                result["endpos"] = (str(reply.endpos), "")
            return result
        if reply.code == 511:
            self.hung_up = True
            raise ChannelHungUp("command not permitted on a dead channel")
        if reply.code == 510:
            raise pyst.AGIInvalidCommand(f"Asterisk does not know the command {line.split(' ', 1)[0]!r}")
        if reply.code == 520:
            raise pyst.AGIUsageError(reply.text)
        raise pyst.AGIUnknownError(reply.code, "unexpected reply from Asterisk")

    def read_reply(self) -> Reply:
        """The next reply, noting any ``HANGUP`` lines that come before it."""
        while True:
            self.test_hangup()
            line = self.transport.read_line()
            if line == HANGUP_LINE:
                self.hung_up = True
                continue
            if line.startswith("520-"):
                usage = [line[4:]]
                while True:
                    more = self.transport.read_line()
                    if more.startswith("520 "):
                        return Reply(520, text="\n".join(usage))
                    if len(usage) > 200:
                        raise AGIProtocolError("520 usage text without an end")
                    usage.append(more)
            return parse_reply(line)

    def release(self) -> None:
        """Hand the channel back to the dialplan now; the handler may go on with work that needs no call."""
        self.transport.finish()

    # Commands pyst2 lacks or gets wrong for our use.

    def get_digits(self, sound: str, timeout_ms: int, max_digits: int) -> str:
        """GET DATA: play ``sound`` while collecting keys; "" when the caller pressed nothing.

        ``result=-1`` here always means the channel is gone (a missing sound still collects digits).
        """
        try:
            value = self.get_data(sound, timeout_ms, max_digits)
        except CommandFailed:
            self.hung_up = True
            raise ChannelHungUp("the caller hung up during input") from None
        return value

    def play(self, sound: str) -> None:
        """STREAM FILE without escape digits. A missing sound is logged, not fatal: the call goes on."""
        try:
            self.stream_file(sound, "")
        except CommandFailed as exc:
            if exc.reply.endpos:
                self.hung_up = True
                raise ChannelHungUp("the caller hung up during a prompt") from None
            log.warning("prompt could not be played", extra={"event": "agi.prompt_missing", "sound": sound})

    def set_variable(self, name, value):
        """SET VARIABLE with Asterisk's quoting (backslash-escaped quotes and backslashes)."""
        value = str(value).replace("\\", "\\\\").replace('"', '\\"')
        self.execute("SET VARIABLE", name, f'"{value}"')
