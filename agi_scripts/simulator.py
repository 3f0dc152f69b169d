"""A simulated Asterisk: places a call to the FastAGI server exactly as Asterisk 20 does.

It sends the ``agi_*`` block, answers each command the way the recordings in ``shared/fixtures``
show, plays the caller's key presses into GET DATA, can hang up at any command (``200 result=-1``
then ``HANGUP``, then 511 for what a dead channel refuses), and after the server half-closes it
sends its last ``HANGUP`` and closes. Sounds can be missing (GET DATA ``200 result=-1`` with the
channel still up, STREAM FILE ``200 result=-1 endpos=0``), and ``AGISIGHUP=no`` can be played (no
``HANGUP`` line at all). ``hotline call`` and the tests drive calls with it.
"""

from __future__ import annotations

import itertools
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field

from agi_scripts.protocol import HANGUP_LINE

_uniqueids = itertools.count(1)

# Commands that wait on the caller (a hang-up interrupts them with result=-1).
_BLOCKING = {"STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "EXEC", "SAY DIGITS", "SAY NUMBER"}
# Commands res_agi allows on a dead channel (the rest get 511), as recorded.
_DEAD_OK = {"GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "VERBOSE", "DATABASE", "NOOP"}


@dataclass
class Caller:
    """Who calls, what they dial, which keys they press and when they hang up."""

    number: str = "13800138000"
    name: str = ""
    dialled: str = "12345"
    keys: list[str] = field(default_factory=list)  # one entry per GET DATA; "" = presses nothing
    hangup_at: int | None = None  # hang up while this command (1-based) is pending
    script: str = "incoming"
    channel: str = "PJSIP/carrier-00000001"
    uniqueid: str = ""
    missing_sounds: bool = False  # answer GET DATA and STREAM FILE as Asterisk does for a sound it lacks
    callingpres: int | None = None  # agi_callingpres; None: 0, or 67 (unavailable) for a withheld number
    agisighup: bool = True  # False plays AGISIGHUP=no: Asterisk sends no HANGUP line at all
    env: dict[str, str] = field(default_factory=dict)  # agi_* values sent instead of (or beside) the usual

    def __post_init__(self) -> None:
        if not self.uniqueid:
            self.uniqueid = f"{int(time.time())}.{next(_uniqueids)}"


class SimulatedChannel:
    """Asterisk's side of one AGI session, as a pure function of the commands it receives."""

    def __init__(self, caller: Caller, host: str = "127.0.0.1", port: int = 4573):
        self.caller = caller
        self.host, self.port = host, port
        # A call's first channel has its own uniqueid as linkedid.
        self.variables: dict[str, str] = {"CHANNEL(language)": "zh", "CHANNEL(linkedid)": caller.uniqueid}
        self.keys = list(caller.keys)
        self.commands = 0
        self.hung_up = False
        self.transcript: list[str] = []

    def env_lines(self) -> list[str]:
        c = self.caller
        withheld = not c.number or c.number in ("unknown", "anonymous")
        callingpres = c.callingpres if c.callingpres is not None else (67 if withheld else 0)
        lines = [
            "agi_network: yes",
            f"agi_network_script: {c.script}",
            f"agi_request: agi://{self.host}:{self.port}/{c.script}",
            f"agi_channel: {c.channel}",
            "agi_language: zh",
            f"agi_type: {c.channel.split('/', 1)[0]}",
            f"agi_uniqueid: {c.uniqueid}",
            "agi_version: 20.20.1",
            f"agi_callerid: {'unknown' if withheld else c.number}",
            f"agi_calleridname: {c.name or 'unknown'}",
            f"agi_callingpres: {callingpres}",
            "agi_callingani2: 0",
            "agi_callington: 0",
            "agi_callingtns: 0",
            f"agi_dnid: {c.dialled}",
            "agi_rdnis: unknown",
            "agi_context: hotline-incoming",
            f"agi_extension: {c.dialled}",
            "agi_priority: 2",
            "agi_enhanced: 0.0",
            "agi_accountcode: ",
            "agi_threadid: 139620380935872",
        ]
        for key, value in c.env.items():
            at = [i for i, line in enumerate(lines) if line.split(":", 1)[0] == key]
            if at:
                lines[at[0]] = f"{key}: {value}"
            else:
                lines.append(f"{key}: {value}")
        lines.append("")
        self.transcript.extend("<<< " + line for line in lines)
        return lines

    def respond(self, command: str) -> list[str]:
        """The lines Asterisk sends back for one command line."""
        self.transcript.append(">>> " + command)
        self.commands += 1
        if self.caller.hangup_at is not None and self.commands == self.caller.hangup_at and not self.hung_up:
            verb = _verb(command)
            if verb in _BLOCKING:  # the command waited on the caller: it ends with -1
                self.hung_up = True
                reply = ["200 result=-1 endpos=1600" if verb == "STREAM FILE" else "200 result=-1"]
            else:  # an instant command completes; the hang-up follows it
                reply = self._answer(command)
                self.hung_up = True
            return self._out(reply + ([HANGUP_LINE] if self.caller.agisighup else []))
        return self._out(self._answer(command))

    def _out(self, lines: list[str]) -> list[str]:
        self.transcript.extend("<<< " + line for line in lines)
        return lines

    def _answer(self, command: str) -> list[str]:
        if command.lower().startswith("failure"):
            self.hung_up = True
            return [HANGUP_LINE] if self.caller.agisighup else []
        try:
            words = shlex.split(command)
        except ValueError:
            return ["510 Invalid or unknown command"]
        verb = _verb(command)
        args = words[len(verb.split()):] if verb else []
        if verb is None:
            return ["510 Invalid or unknown command"]
        if self.hung_up and verb not in _DEAD_OK:
            return ["511 Command Not Permitted on a dead channel or intercept routine"]
        if verb == "ANSWER":
            return ["200 result=0"]
        if verb == "CHANNEL STATUS":
            return ["200 result=6"]
        if verb in ("VERBOSE", "NOOP"):
            return ["200 result=1" if verb == "VERBOSE" else "200 result=0"]
        if verb == "SET VARIABLE":
            if len(args) < 2:
                return _usage("Sets a variable to the current channel.")
            self.variables[args[0]] = args[1]
            return ["200 result=1"]
        if verb == "GET VARIABLE":
            if not args:
                return _usage("Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set.")
            value = self.variables.get(args[0])
            return ["200 result=0"] if value is None else [f"200 result=1 ({value})"]
        if verb == "GET FULL VARIABLE":
            return [f"200 result=1 ({self.variables.get(args[0].strip('${}'), '') if args else ''})"]
        if verb == "STREAM FILE":
            if len(args) < 2:
                return _usage("Send the given file, allowing playback to be interrupted by the given digits, if any.")
            return ["200 result=-1 endpos=0"] if self.caller.missing_sounds else ["200 result=0 endpos=8000"]
        if verb == "GET DATA":
            if not args:
                return _usage("Stream the given <replaceable>file</replaceable>, and receive DTMF data.")
            if self.caller.missing_sounds:  # the caller hears nothing, so presses nothing; the channel stays up
                return ["200 result=-1"]
            max_digits = int(args[2]) if len(args) > 2 and args[2].isdigit() else 1024
            pressed = self.keys.pop(0) if self.keys else ""
            digits = pressed.split("#", 1)[0][:max_digits]
            if digits and (len(digits) == max_digits or "#" in pressed):
                return [f"200 result={digits}"]
            return [f"200 result={digits} (timeout)"]
        if verb == "WAIT FOR DIGIT":
            pressed = self.keys.pop(0) if self.keys else ""
            return [f"200 result={ord(pressed[0]) if pressed else 0}"]
        if verb == "EXEC":
            return ["200 result=0"]
        if verb == "HANGUP":
            self.hung_up = True
            return ["200 result=1"] + ([HANGUP_LINE] if self.caller.agisighup else [])
        if verb in ("SAY DIGITS", "SAY NUMBER"):
            if len(args) < 2:
                return _usage("Say a given digit string, returning early if any of the given DTMF digits are "
                              "received on the channel.")
            return ["200 result=0"]
        return ["510 Invalid or unknown command"]


_VERBS = ("ANSWER", "CHANNEL STATUS", "VERBOSE", "NOOP", "SET VARIABLE", "GET FULL VARIABLE", "GET VARIABLE",
          "STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "EXEC", "HANGUP", "SAY DIGITS", "SAY NUMBER",
          "DATABASE PUT", "DATABASE GET", "DATABASE DEL")


def _verb(command: str) -> str | None:
    upper = " ".join(command.split()).upper()
    for verb in _VERBS:
        if upper == verb or upper.startswith(verb + " "):
            return "DATABASE" if verb.startswith("DATABASE") else verb
    return None


def _usage(text: str) -> list[str]:
    return ["520-Invalid command syntax.  Proper usage follows:", text, "520 End of proper usage."]


@dataclass
class CallResult:
    variables: dict[str, str]
    transcript: list[str]
    commands: int
    caller_hung_up: bool

    @property
    def ticket(self) -> str | None:
        return self.variables.get("HOTLINE_TICKET")


def place_call(caller: Caller, host: str = "127.0.0.1", port: int = 4573, timeout: float = 30.0,
               channel: SimulatedChannel | None = None) -> CallResult:
    """Connect to a FastAGI server as Asterisk would and play one call to its end (on ``channel``, a
    SimulatedChannel of the caller that a test may have changed, or a new one)."""
    channel = channel or SimulatedChannel(caller, host, port)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        rfile = sock.makefile("rb")
        sock.sendall("".join(line + "\n" for line in channel.env_lines()).encode())
        while True:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                raw = rfile.readline(65536)
            except OSError:
                raw = b""
            if not raw:  # the server closed its side: Asterisk says HANGUP once more and closes
                channel.transcript.append("# server closed the session")
                if caller.agisighup:
                    try:
                        sock.sendall(b"HANGUP\n")
                    except OSError:
                        pass
                    channel.transcript.append("<<< HANGUP")
                break
            line = raw.decode("utf-8", "replace").rstrip("\n")
            replies = channel.respond(line)
            try:
                sock.sendall("".join(r + "\n" for r in replies).encode())
            except OSError:
                break
            if line.lower().startswith("failure"):
                break
    return CallResult(dict(channel.variables), channel.transcript, channel.commands, channel.hung_up)


def place_classic_call(command: list[str], caller: Caller, env: dict[str, str] | None = None,
                       timeout: float = 60.0) -> tuple[CallResult, int, str]:
    """Run a classic AGI script as Asterisk does (one process, stdin/stdout) for one call.

    Returns the call, the script's exit status and what it wrote to stderr (Asterisk's log).
    """
    channel = SimulatedChannel(caller)
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdin.write("".join(line + "\n" for line in channel.env_lines()).encode())
    proc.stdin.flush()
    for raw in proc.stdout:
        for reply in channel.respond(raw.decode("utf-8", "replace").rstrip("\n")):
            proc.stdin.write((reply + "\n").encode())
        proc.stdin.flush()
    proc.stdin.close()
    stderr = proc.stderr.read().decode("utf-8", "replace")
    status = proc.wait(timeout=timeout)
    return CallResult(dict(channel.variables), channel.transcript, channel.commands, channel.hung_up), status, stderr
