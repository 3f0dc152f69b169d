"""The AGI wire format: the ``agi_*`` environment block and Asterisk's reply lines.

Facts from recordings of Asterisk 20 (``shared/fixtures``): lines end in ``\\n``; a reply is
``200 result=N [(data)] [endpos=N]``; ``510`` is an unknown command, ``511`` a command not allowed
on a dead channel, ``520-...`` opens a multi-line usage text closed by ``520 End of proper usage.``;
a ``HANGUP`` line may arrive at any time, between or before replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE = 8192  # bytes; a longer line is a protocol error, never an unbounded buffer
MAX_ENV_LINES = 200

HANGUP_LINE = "HANGUP"


class AGIProtocolError(ValueError):
    """Asterisk (or something pretending to be it) sent what AGI does not allow."""


@dataclass(frozen=True)
class Reply:
    """One reply from Asterisk to one command."""

    code: int
    result: str = ""
    data: str | None = None  # the text in parentheses, e.g. "timeout" or a variable's value
    endpos: int | None = None
    text: str = ""  # the raw reply (or the usage text of a 520)

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


_REPLY = re.compile(r"^200 result=(?P<result>-?\d*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?\s*$")


def parse_reply(line: str) -> Reply:
    """Parse a single-line reply (``200 ...``, ``510 ...``, ``511 ...``); 520 usage needs more lines."""
    if line.startswith("200"):
        m = _REPLY.match(line)
        if not m:
            raise AGIProtocolError(f"unreadable 200 reply: {line[:120]!r}")
        endpos = m.group("endpos")
        return Reply(200, m.group("result"), m.group("data"), int(endpos) if endpos is not None else None, line)
    m = re.match(r"^(\d{3})[ -]?(.*)$", line)
    if not m:
        raise AGIProtocolError(f"not an AGI reply: {line[:120]!r}")
    return Reply(int(m.group(1)), text=m.group(2))


@dataclass
class AGIEnvironment:
    """The ``agi_*`` block Asterisk sends when a session starts."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def script(self) -> str:
        """The handler name of ``agi://host:port/NAME?query``: NAME without slashes or query string."""
        raw = self.values.get("agi_network_script") or _script_from_request(self.values.get("agi_request", ""))
        return raw.split("?", 1)[0].strip("/")

    @property
    def query(self) -> str:
        raw = self.values.get("agi_network_script", "")
        return raw.split("?", 1)[1] if "?" in raw else ""

    @property
    def args(self) -> list[str]:
        out = []
        n = 1
        while f"agi_arg_{n}" in self.values:
            out.append(self.values[f"agi_arg_{n}"])
            n += 1
        return out


_REQUEST = re.compile(r"^agi://[^/]*/?(.*)$")
_ENV_KEY = re.compile(r"agi_\w+")


def _script_from_request(request: str) -> str:
    m = _REQUEST.match(request)
    return m.group(1) if m else request


def parse_env_line(line: str) -> tuple[str, str]:
    """``agi_key: value`` -> (key, value); a value may itself contain ``: ``."""
    key, sep, value = line.partition(":")
    key = key.strip()
    if not sep or not key.startswith("agi_") or not _ENV_KEY.fullmatch(key):
        raise AGIProtocolError(f"not an agi_* line: {line[:120]!r}")
    return key, value[1:] if value.startswith(" ") else value


class EnvironmentBlock:
    """The ``agi_*`` block, fed one line at a time up to its blank line.

    ``HANGUP`` lines are ignored and malformed lines skipped (counted in ``skipped``), never fatal;
    more than ``MAX_ENV_LINES`` lines is a protocol error.
    """

    def __init__(self) -> None:
        self.env = AGIEnvironment()
        self.lines = 0
        self.skipped = 0

    def add(self, line: str) -> bool:
        """Take one line (without its newline); True once the blank line that ends the block came."""
        if self.lines >= MAX_ENV_LINES:
            raise AGIProtocolError(f"agi_* block longer than {MAX_ENV_LINES} lines")
        self.lines += 1
        if line == "":
            return True
        if line == HANGUP_LINE:
            return False
        try:
            key, value = parse_env_line(line)
        except AGIProtocolError:
            self.skipped += 1
            return False
        self.env.values[key] = value
        return False
