"""One AGI session's command channel: pyst2's command vocabulary over our own transport.

pyst2's ``AGI`` class reads ``sys.stdin``, installs a SIGHUP handler (which fails outside the main
thread) and does not know the ``HANGUP`` line, ``511`` or ``(timeout)`` replies. We keep its
command methods (``get_data``, ``stream_file``, ``set_variable``, ...) and replace the constructor
and the send/receive path.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import time
from typing import BinaryIO

from asterisk import agi as pyst

from agi_scripts.protocol import (
    HANGUP_LINE,
    MAX_LINE,
    AGIEnvironment,
    AGIProtocolError,
    EnvironmentBlock,
    Reply,
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
    """Newline-framed lines over a socket, or over a pair of binary streams (the classic stdin/stdout AGI).

    Over a socket, lines are cut from our own receive buffer, so a read is bounded as a whole: one line
    must arrive within ``read_timeout`` and before the session's ``deadline``, however slowly its bytes
    trickle in (a per-``recv`` timeout never fires on a client sending a byte a second). Over streams
    there is no clock: the stream's owner (Asterisk's process) bounds it.

    The socket's waits are kernel timeouts (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket, not Python's
    ``settimeout``: with that, every send and receive costs three system calls (switching the socket's
    mode, poll, then the call itself) and three trips through the interpreter lock, for one here. A read
    or send may overrun its bound by up to ``_TIMEOUT_STEP``.
    """

    _RECV_SIZE = 65536
    _TIMEOUT_STEP = 0.01  # kernel timeouts are rounded up to this, so one setting serves many reads

    def __init__(self, rfile: BinaryIO | None = None, wfile: BinaryIO | None = None,
                 sock: socket.socket | None = None, *, read_timeout: float | None = None,
                 deadline: float | None = None):
        self._rfile = rfile
        self._wfile = wfile
        self._sock = sock
        self.read_timeout = read_timeout
        self.deadline = deadline  # time.monotonic() at which the session's budget runs out
        self._buffer = bytearray()
        self.eof = False  # Asterisk closed its side (socket only)
        self.finished = False
        self._kernel_timeout: float | None = None  # the socket's SO_RCVTIMEO/SO_SNDTIMEO; None: not set

    @classmethod
    def over_socket(cls, sock: socket.socket, read_timeout: float, deadline: float | None = None) -> "LineTransport":
        return cls(sock=sock, read_timeout=read_timeout, deadline=deadline)

    def pop_line(self) -> str | None:
        """The next complete line already received, or None; a line over ``MAX_LINE`` is a protocol error."""
        end = self._buffer.find(b"\n", 0, MAX_LINE)
        if end < 0:
            if len(self._buffer) >= MAX_LINE:
                raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return raw.decode("utf-8", "replace").rstrip("\r")

    def receive(self) -> bool:
        """One non-blocking read into the buffer (for a caller that polls the socket); False at end of stream."""
        try:
            data = self._sock.recv(self._RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def read_line(self, until: float | None = None) -> str:
        """The next line; ``until`` (a time.monotonic() value) bounds this read further, e.g. a whole block."""
        if self._sock is None:
            return self._read_stream_line()
        end, limit = self._limit(until)  # fixed for the whole read: a trickle must not push it on
        while True:
            line = self.pop_line()
            if line is not None:
                return line
            if self.eof:
                raise ConnectionClosed("Asterisk closed the connection")
            timeout = None if end is None else end - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise self._expired(limit)
            self._wait_at_most(timeout)
            try:
                data = self._sock.recv(self._RECV_SIZE)
            except (BlockingIOError, InterruptedError):  # the kernel timeout: the clock above decides
                continue
            except OSError as exc:
                raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None
            if not data:
                self.eof = True
            self._buffer += data

    def _wait_at_most(self, seconds: float | None) -> None:
        """Make the socket's next blocking send or receive give up after about ``seconds`` (None: never)."""
        if seconds is None:
            wanted = 0.0  # a zero SO_RCVTIMEO means no timeout
        else:
            wanted = max(self._TIMEOUT_STEP, math.ceil(seconds / self._TIMEOUT_STEP) * self._TIMEOUT_STEP)
        if wanted == self._kernel_timeout:
            return
        if self._kernel_timeout is None:
            self._sock.setblocking(True)  # once: the accept loop read the agi_* block without blocking
        whole = int(wanted)
        value = struct.pack("ll", whole, int(round((wanted - whole) * 1_000_000)))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._kernel_timeout = wanted

    def _limit(self, until: float | None) -> tuple[float | None, str]:
        """When a read or send starting now must be over (time.monotonic(); None: never), and which limit that is."""
        end, limit = math.inf, ""
        if self.read_timeout is not None:
            end, limit = time.monotonic() + self.read_timeout, "read"
        if until is not None and until < end:
            end, limit = until, "block"
        deadline = self.deadline
        if deadline is not None and deadline <= end:
            end, limit = deadline, "session"
        return (None if end == math.inf else end), limit

    @staticmethod
    def _expired(limit: str) -> Exception:
        if limit == "session":
            return SessionExpired("the AGI session ran past its time budget")
        if limit == "block":
            return AsteriskSilent("the agi_* block did not arrive within the read timeout")
        return AsteriskSilent("no line from Asterisk within the read timeout")

    def _read_stream_line(self) -> str:
        try:
            raw = self._rfile.readline(MAX_LINE + 1)
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
        data = line.encode("utf-8") + b"\n"
        try:
            if self._sock is None:
                self._wfile.write(data)
                self._wfile.flush()
                return
            end, limit = self._limit(None)
            timeout = None if end is None else end - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise self._expired(limit)
            self._wait_at_most(timeout)
            self._sock.sendall(data)
        except (BlockingIOError, socket.timeout, TimeoutError):
            raise AsteriskSilent("Asterisk took no command within the read timeout") from None
        except OSError as exc:
            raise ConnectionClosed(f"cannot send to Asterisk: {exc.strerror or exc}") from None

    def finish(self, drain_timeout: float = 2.0) -> None:
        """Half-close, then read what Asterisk still sends (its last ``HANGUP``) until it closes.

        Asterisk's AGI() returns to the dialplan only now; calling it twice is harmless.
        """
        if self._sock is None or self.finished:
            return
        self.finished = True
        self._buffer.clear()
        if self.eof:  # Asterisk is gone already: nothing to wait for
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + drain_timeout
            while (left := end - time.monotonic()) > 0:
                self._wait_at_most(left)
                try:
                    if not self._sock.recv(self._RECV_SIZE):
                        break
                except (BlockingIOError, InterruptedError):
                    continue
        except OSError:
            pass


def read_environment(transport: LineTransport) -> AGIEnvironment:
    """Read the ``agi_*`` block up to its blank line; bad lines are skipped, never fatal.

    Over a socket the whole block must arrive within the transport's read timeout.
    """
    block = EnvironmentBlock()
    until = time.monotonic() + transport.read_timeout if transport.read_timeout is not None else None
    while not block.add(transport.read_line(until)):  # bounded: the block raises past MAX_ENV_LINES lines
        pass
    if block.skipped:
        log.warning("skipped malformed agi_* lines", extra={"event": "agi.bad_env_line", "lines": block.skipped})
    return block.env


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

    def channel_up(self) -> bool:
        """Whether the caller is still there: False once a ``HANGUP`` line came, else asks CHANNEL STATUS.

        Asterisk sends a pending ``HANGUP`` line before its next reply, and refuses CHANNEL STATUS on a
        dead channel with 511 (so a hang-up shows even with AGISIGHUP=no, which sends no ``HANGUP``).
        """
        if self.hung_up:
            return False
        try:
            self.channel_status()
        except ChannelHungUp:
            return False
        return not self.hung_up

    def get_digits(self, sound: str, timeout_ms: int, max_digits: int) -> str:
        """GET DATA: play ``sound`` while collecting keys; "" when the caller pressed nothing.

        Raises ChannelHungUp when the caller is gone, and CommandFailed when the caller is there but the
        sound could not be played: Asterisk 20 answers ``result=-1`` for both, so -1 alone says nothing.
        """
        try:
            return self.get_data(sound, timeout_ms, max_digits)
        except CommandFailed:
            if not self.channel_up():
                raise ChannelHungUp("the caller hung up during input") from None
            raise

    def play(self, sound: str) -> bool:
        """STREAM FILE without escape digits; False when the sound could not be played (the call goes on)."""
        try:
            self.stream_file(sound, "")
        except CommandFailed as exc:
            # endpos > 0: part of the sound played, so the file exists and the caller left.
            if exc.reply.endpos or not self.channel_up():
                self.hung_up = True
                raise ChannelHungUp("the caller hung up during a prompt") from None
            return False
        return True

    def set_variable(self, name, value):
        """SET VARIABLE with Asterisk's quoting (backslash-escaped quotes and backslashes)."""
        value = str(value).replace("\\", "\\\\").replace('"', '\\"')
        self.execute("SET VARIABLE", name, f'"{value}"')
