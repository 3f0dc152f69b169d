"""The Asterisk configuration in asterisk/ keeps its contract with the backend.

Two kinds of tests:

* Static checks on the parsed .conf files: the incoming context runs the FastAGI handler /incoming and a
  Queue() on HOTLINE_QUEUE with QUEUE_PRIO set; queues.conf defines exactly the four queues the backend
  routes to, with the 15 s service level; manager.conf binds to loopback and carries HOTLINE_TICKET on
  events; pjsip.conf agents use the templates.
* A small dialplan simulator that walks [hotline-call] as Asterisk would, with the backend and the queues
  played by the test. It models only what this dialplan uses (the apps and functions below, the `$[...]`
  forms "a" = "b", !=, |, &) and raises on anything else, so the dialplan cannot silently grow beyond what
  is checked here. How it models the backend comes from the recordings of Asterisk 20.20.1 in the shared
  fixtures (fastagi-failures.txt, fastagi-hangup.txt) and from res_agi.c / pbx.c:
    refused  -> AGISTATUS=FAILURE, dialplan continues                                (fixture case a)
    closed   -> AGISTATUS=SUCCESS, no variable set                                    (fixture case b)
    failure  -> AGISTATUS=FAILURE                                                     (fixture case c)
    silent   -> Asterisk never times the server out (fixture case d). If TIMEOUT(absolute) expires,
                res_agi sends HANGUP and keeps waiting on the socket unless AGIEXITONHANGUP=yes, in which
                case it returns at once (fastagi-hangup.txt cases 6-7); the PBX then runs the "T"
                extension of the current context (pbx.c, __ast_pbx_run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

ASTERISK_DIR = Path(__file__).resolve().parent.parent / "asterisk"
KNOWN_QUEUES = {"hotline-zh", "urgent-zh", "traffic-zh", "hotline-en"}
DEFAULT_QUEUE = "hotline-zh"


# --------------------------------------------------------------------------------------------------
# A tiny parser for Asterisk's .conf format
# --------------------------------------------------------------------------------------------------


@dataclass
class Section:
    name: str
    template: bool  # [name](!)
    bases: list[str]  # [name](base1,base2)
    items: list[tuple[str, str, str]] = field(default_factory=list)  # (key, "=" or "=>", value)
    line: int = 0

    def values(self, key: str) -> list[str]:
        return [v for k, _, v in self.items if k == key]


def strip_comment(line: str) -> str:
    """Cut a ';' comment; '\\;' is a literal semicolon (as in Asterisk)."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out)


def parse_conf(text: str) -> list[Section]:
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("#"):
            raise ValueError(f"line {number}: #include/#exec are not used in these files: {line!r}")
        header = re.fullmatch(r"\[([^\]]+)\]\s*(?:\(([^)]*)\))?", line)
        if header:
            options = [o.strip() for o in (header.group(2) or "").split(",") if o.strip()]
            current = Section(
                name=header.group(1).strip(),
                template="!" in options,
                bases=[o for o in options if o not in ("!", "+")],
                line=number,
            )
            sections.append(current)
            continue
        item = re.match(r"([^=]+?)\s*(=>|=)\s*(.*)$", line)
        if current is None or item is None:
            raise ValueError(f"line {number}: not a section or key=value: {raw!r}")
        current.items.append((item.group(1).strip(), item.group(2), item.group(3).strip()))
    return sections


def load(name: str) -> list[Section]:
    return parse_conf((ASTERISK_DIR / name).read_text(encoding="utf-8"))


def resolved(sections: list[Section], section: Section) -> dict[str, str]:
    """The options of a section with its templates applied (later values win, like Asterisk's)."""
    merged: dict[str, str] = {}
    for base_name in section.bases:
        earlier = [s for s in sections if s.name == base_name and s.line < section.line]
        assert earlier, f"[{section.name}] inherits from [{base_name}], which is not defined before it"
        merged.update(resolved(sections, earlier[-1]))
    for key, _, value in section.items:
        merged[key] = value
    return merged


def concrete(sections: list[Section]) -> list[Section]:
    return [s for s in sections if not s.template]


# --------------------------------------------------------------------------------------------------
# The dialplan model
# --------------------------------------------------------------------------------------------------


@dataclass
class Step:
    priority: int
    label: str | None
    app: str
    args: str


class Dialplan:
    def __init__(self, sections: list[Section]):
        self.globals: dict[str, str] = {}
        self.contexts: dict[str, dict[str, dict[int, Step]]] = {}
        self.order: dict[str, list[str]] = {}
        for section in concrete(sections):
            if section.name == "globals":
                for key, _, value in section.items:
                    self.globals[key] = value
                continue
            if section.name == "general":
                continue
            extens = self.contexts.setdefault(section.name, {})
            order = self.order.setdefault(section.name, [])
            exten, last = None, 0
            for key, _, value in section.items:
                if key == "exten":
                    exten, rest = value.split(",", 1)
                    exten = exten.strip()
                    if exten not in extens:
                        extens[exten] = {}
                        order.append(exten)
                    last = 0
                elif key == "same":
                    assert exten is not None, f"[{section.name}]: 'same =>' before any 'exten =>'"
                    rest = value
                elif key == "include":
                    raise AssertionError("include => is not modelled by this simulator")
                else:
                    raise AssertionError(f"[{section.name}]: unexpected key {key!r}")
                prio_text, app_text = rest.split(",", 1)
                m = re.fullmatch(r"\s*(n|\d+)\s*(?:\((\w+)\))?\s*", prio_text)
                assert m, f"[{section.name}] {exten}: bad priority {prio_text!r}"
                priority = last + 1 if m.group(1) == "n" else int(m.group(1))
                last = priority
                app = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", app_text, re.S)
                assert app, (
                    f"[{section.name}] {exten},{priority}: {app_text.strip()!r} is not App(args) "
                    "(an unbalanced ')' usually means a ';' in the arguments started a comment)"
                )
                assert priority not in extens[exten], f"[{section.name}] {exten}: priority {priority} twice"
                extens[exten][priority] = Step(priority, m.group(2), app.group(1), app.group(2))

    def steps(self) -> list[tuple[str, str, Step]]:
        return [
            (context, exten, step)
            for context, extens in self.contexts.items()
            for exten, prios in extens.items()
            for step in prios.values()
        ]

    def find(self, context: str, exten: str) -> dict[int, Step] | None:
        """Exact match first, then the most specific matching pattern (Asterisk's order)."""
        extens = self.contexts.get(context, {})
        if exten in extens:
            return extens[exten]
        matching = [p for p in self.order.get(context, []) if p.startswith("_") and pattern_match(p, exten)]
        if not matching:
            return None
        return extens[min(matching, key=pattern_rank)]


def _pattern_parts(pattern: str) -> list[str]:
    parts, i = [], 1
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            j = pattern.index("]", i)
            parts.append(pattern[i : j + 1])
            i = j + 1
            continue
        if c != "-":  # dashes are ignored in extension patterns
            parts.append(c)
        i += 1
    return parts


def pattern_match(pattern: str, exten: str) -> bool:
    regex = ""
    for part in _pattern_parts(pattern):
        regex += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
            part, part if part.startswith("[") else re.escape(part)
        )
    return re.fullmatch(regex, exten) is not None


def pattern_rank(pattern: str) -> list[int]:
    ranks = []
    for part in _pattern_parts(pattern):
        if part.startswith("["):
            ranks.append(len(part) - 2)
        else:
            ranks.append({"N": 8, "Z": 9, "X": 10, ".": 1000, "!": 1001}.get(part, 0))
    return ranks


# --------------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------------


class Unsupported(Exception):
    """The dialplan uses something this simulator does not model."""


def ast_true(value: str) -> bool:
    return value.strip().lower() in {"yes", "true", "y", "t", "1", "on"}


def check_condition(condition: str) -> bool:
    """pbx_checkcondition(): empty is false, a number is its own truth, any other string is true."""
    if not condition:
        return False
    number = re.match(r"\s*([-+]?\d+)", condition)
    return int(number.group(1)) != 0 if number else True


def find_close(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one opened just before ``start`` (Asterisk counts them)."""
    depth = 1
    i = start
    while i < len(text):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise Unsupported(f"unbalanced {open_ch}{close_ch} in {text!r}")


class ExprError(Exception):
    pass


def check_expression_source(source: str) -> None:
    """Refuse $[...] written with operators the evaluator does not model (checked before substitution,
    so a strange variable value is evaluated, not refused)."""
    text, i = "", 0
    while i < len(source):
        if source.startswith("${", i):
            i = find_close(source, i + 2, "{", "}") + 1
            text += " v "
        elif source[i] == '"':
            j = source.find('"', i + 1)
            i = len(source) if j < 0 else j + 1
            text += " s "
        else:
            text += source[i]
            i += 1
    if re.search(r"[<>+*/%?:~]|!(?!=)|\s-\s|=~", text):
        raise Unsupported(f"operator in $[{source}] not modelled")


def evaluate(expr: str) -> str:
    """Asterisk's $[...] for the forms used here; a syntax error gives "" like Asterisk's empty result."""
    tokens = re.findall(r'\s*("[^"]*"|!=|=|\||&|\(|\)|[^\s=!|&()"]+|\S)', expr)
    if "".join(tokens).replace(" ", "") != expr.replace(" ", "").strip():
        raise Unsupported(f"cannot tokenize $[{expr}]")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ExprError("unexpected end")
        pos += 1
        return tokens[pos - 1]

    def atom() -> str:
        tok = take()
        if tok == "(":
            value = or_expr()
            if take() != ")":
                raise ExprError("missing )")
            return value
        if tok.startswith('"'):
            if len(tok) < 2 or not tok.endswith('"'):
                raise ExprError("unterminated string")
            return tok[1:-1]
        if tok in {"=", "!=", "|", "&", ")", '"'}:
            raise ExprError(f"unexpected {tok}")
        return tok

    def equal(a: str, b: str) -> bool:
        if re.fullmatch(r"-?\d+", a) and re.fullmatch(r"-?\d+", b):
            return int(a) == int(b)
        return a == b

    def cmp_expr() -> str:
        left = atom()
        if peek() in ("=", "!="):
            op = take()
            right = atom()
            return "1" if equal(left, right) == (op == "=") else "0"
        return left

    def truthy(v: str) -> bool:
        return v not in ("", "0")

    def and_expr() -> str:
        left = cmp_expr()
        while peek() == "&":
            take()
            right = cmp_expr()
            left = left if truthy(left) and truthy(right) else "0"
        return left

    def or_expr() -> str:
        left = and_expr()
        while peek() == "|":
            take()
            right = and_expr()
            left = left if truthy(left) else right
        return left

    try:
        result = or_expr()
        if pos != len(tokens):
            raise ExprError("trailing tokens")
        return result
    except ExprError:
        return ""


class CallEnded(Exception):
    pass


@dataclass
class Backend:
    """What the FastAGI server does with the call: mode and the variables it sets."""

    mode: str = "ok"  # ok | refused | closed | failure | silent | caller-hangup
    sets: dict[str, str] = field(default_factory=dict)


@dataclass
class QueueCall:
    name: str
    priority: str | None
    wait: str
    options: str
    absolute_timeout: float
    language: str


class Call:
    """One channel walking the dialplan."""

    def __init__(
        self,
        dialplan: Dialplan,
        queues: set[str],
        backend: Backend,
        queue_outcome: Callable[[str, int], str] = lambda name, n: "TIMEOUT",
        missing_sounds: frozenset[str] = frozenset(),
    ):
        self.dp = dialplan
        self.known_queues = queues
        self.backend = backend
        self.queue_outcome = queue_outcome
        self.missing_sounds = missing_sounds
        self.vars: dict[str, str] = {}
        self.language = "en"  # a fresh channel's default, as in the fixtures' agi_language
        self.absolute_timeout = 0.0
        self.answered = False
        self.context = self.exten = ""
        self.priority = 0
        self.trace: list[tuple[str, str, str]] = []  # (context, app, substituted args)
        self.queue_calls: list[QueueCall] = []
        self.sounds: list[str] = []  # "<lang>/<file>" as played, digits as "digits:<n>"
        self.agi_urls: list[str] = []
        self.ended_by = ""
        self.guard_fired = False
        self.h_ran = False
        self.jumped = False

    # ---- variables and substitution ----
    def get(self, name: str) -> str:
        builtins = {"EXTEN": self.exten, "CONTEXT": self.context, "CHANNEL": "PJSIP/carrier1-00000001"}
        if name in self.vars:
            return self.vars[name]
        if name in self.dp.globals:
            return self.dp.globals[name]
        return builtins.get(name, "")

    def function(self, name: str, args: str) -> str:
        if name == "CHANNEL" and args == "language":
            return self.language
        if name == "TIMEOUT" and args == "absolute":
            return str(self.absolute_timeout)
        if name == "CALLERID" and args == "num":
            return "13800138000"
        if name == "REGEX":
            parts = args.split('"', 2)
            if len(parts) != 3 or parts[0].strip():
                raise Unsupported(f"REGEX({args})")
            subject = parts[2][1:] if parts[2].startswith(" ") else parts[2]
            return "1" if re.search(parts[1], subject) else "0"
        raise Unsupported(f"function {name}({args}) not modelled")

    def substitute(self, text: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text.startswith("${", i):
                end = find_close(text, i + 2, "{", "}")
                inner = self.substitute(text[i + 2 : end])
                func = re.fullmatch(r"(\w+)\((.*)\)", inner, re.S)
                sub = re.fullmatch(r"(\w+):(-?\d+)(?::(-?\d+))?", inner)
                if func:
                    out.append(self.function(func.group(1), func.group(2)))
                elif sub:
                    value = self.get(sub.group(1))
                    start = int(sub.group(2))
                    value = value[start:]
                    if sub.group(3) is not None:
                        value = value[: int(sub.group(3))]
                    out.append(value)
                elif re.fullmatch(r"\w+", inner):
                    out.append(self.get(inner))
                else:
                    raise Unsupported(f"${{{inner}}}")
                i = end + 1
            elif text.startswith("$[", i):
                end = find_close(text, i + 2, "[", "]")
                check_expression_source(text[i + 2 : end])
                out.append(evaluate(self.substitute(text[i + 2 : end])))
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    # ---- control flow ----
    def goto(self, target: str) -> None:
        parts = [p.strip() for p in target.split(",")]
        if len(parts) == 3:
            self.context, self.exten, where = parts
        elif len(parts) == 2:
            self.exten, where = parts
        elif len(parts) == 1:
            (where,) = parts
        else:
            raise Unsupported(f"Goto({target})")
        steps = self.dp.find(self.context, self.exten)
        if steps is None:
            raise AssertionError(f"Goto to missing extension {self.exten}@{self.context}")
        if where.isdigit():
            self.priority = int(where)
        else:
            labelled = [s.priority for s in steps.values() if s.label == where]
            assert labelled, f"no label {where!r} in {self.exten}@{self.context}"
            self.priority = labelled[0]
        self.jumped = True

    def end(self, how: str) -> None:
        self.ended_by = how
        raise CallEnded

    # ---- applications ----
    def run_app(self, app: str, args: str) -> None:
        self.trace.append((self.context, app, args))
        handler = getattr(self, f"app_{app.lower()}", None)
        if handler is None:
            raise Unsupported(f"application {app} not modelled")
        handler(args)

    def app_noop(self, args: str) -> None:
        pass

    def app_log(self, args: str) -> None:
        level = args.split(",", 1)[0]
        assert level in {"ERROR", "WARNING", "NOTICE", "VERBOSE", "DEBUG"}, level

    def app_answer(self, args: str) -> None:
        self.answered = True

    def app_set(self, args: str) -> None:
        name, sep, value = args.partition("=")
        assert sep, f"Set({args}) without '='"
        if name == "CHANNEL(language)":
            self.language = value
        elif name == "TIMEOUT(absolute)":
            self.absolute_timeout = float(value or 0)
        elif re.fullmatch(r"_{0,2}\w+", name):
            self.vars[name.lstrip("_")] = value
        else:
            raise Unsupported(f"Set({name}=...)")

    def app_gotoif(self, args: str) -> None:
        condition, sep, labels = args.partition("?")
        assert sep, f"GotoIf({args}) without '?'"
        if_true, _, if_false = labels.partition(":")
        target = if_true if check_condition(condition) else if_false
        if target:
            self.goto(target)

    def app_goto(self, args: str) -> None:
        self.goto(args)

    def app_execif(self, args: str) -> None:
        condition, sep, apps = args.partition("?")
        assert sep, f"ExecIf({args}) without '?'"
        m = re.fullmatch(r"(\w+)\((.*)\)(?::(\w+)\((.*)\))?", apps, re.S)
        if not m:
            raise Unsupported(f"ExecIf({args})")
        if check_condition(condition):
            self.run_app(m.group(1), m.group(2))
        elif m.group(3):
            self.run_app(m.group(3), m.group(4))

    def app_agi(self, args: str) -> None:
        url = args.split(",", 1)[0]
        self.agi_urls.append(url)
        mode = self.backend.mode
        if mode == "refused":
            self.vars["AGISTATUS"] = "FAILURE"
            return
        if mode in ("ok", "closed", "failure", "silent"):
            if mode != "closed":
                self.vars.update(self.backend.sets)  # SET VARIABLE before going quiet / failing is kept
            if mode == "failure":
                self.vars["AGISTATUS"] = "FAILURE"
                return
            if mode in ("ok", "closed"):
                self.vars["AGISTATUS"] = "SUCCESS"
                return
            # silent: only the channel's absolute timeout can end it, and only with AGIEXITONHANGUP=yes
            if self.absolute_timeout > 0 and ast_true(self.get("AGIEXITONHANGUP")):
                self.vars["AGISTATUS"] = "HANGUP"
                self.guard_fired = True
                self.absolute_timeout = 0.0  # pbx.c clears it when it jumps to T
                if self.dp.find(self.context, "T") is None:
                    self.end("dropped by the absolute timeout (no T extension)")
                self.exten, self.priority, self.jumped = "T", 1, True
                return
            self.end("stuck in AGI forever")
        if mode == "caller-hangup":
            self.vars["AGISTATUS"] = "HANGUP"
            self.end("caller hung up")
        raise Unsupported(f"backend mode {mode}")

    def app_queue(self, args: str) -> None:
        parts = args.split(",")
        name = parts[0]
        options = parts[1] if len(parts) > 1 else ""
        wait = parts[4] if len(parts) > 4 else ""
        call = QueueCall(name, self.vars.get("QUEUE_PRIO"), wait, options, self.absolute_timeout, self.language)
        self.queue_calls.append(call)
        assert name in self.known_queues, f"Queue({name}) but queues.conf has no such queue"
        outcome = self.queue_outcome(name, len(self.queue_calls))
        if outcome == "ANSWERED":
            self.end("talked to an agent")
        assert outcome in {"TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL", "WITHDRAW"}
        self.vars["QUEUESTATUS"] = outcome

    def app_playback(self, args: str) -> None:
        files = args.split(",")[0].split("&")
        for f in files:
            self.sounds.append(f"{self.language}/{f}")
        self.vars["PLAYBACKSTATUS"] = "FAILED" if any(f in self.missing_sounds for f in files) else "SUCCESS"

    def app_saydigits(self, args: str) -> None:
        assert re.fullmatch(r"\d+", args), f"SayDigits({args})"
        self.sounds.append(f"digits:{args}")

    def app_hangup(self, args: str) -> None:
        self.end("Hangup()")

    # ---- the PBX loop ----
    def run(self, context: str, exten: str) -> "Call":
        self.context, self.exten, self.priority = context, exten, 1
        if self.dp.find(context, exten) is None and self.dp.find(context, "i") is not None:
            self.exten = "i"  # pbx.c: an extension that does not exist goes to "i"
        try:
            self._loop()
        except CallEnded:
            pass
        if self.ended_by not in ("stuck in AGI forever",) and self.dp.find(self.context, "h"):
            self.h_ran = True
            self.exten, self.priority = "h", 1
            try:
                self._loop()
            except CallEnded:
                pass
        return self

    def _loop(self) -> None:
        for _ in range(1000):
            steps = self.dp.find(self.context, self.exten)
            if steps is None or self.priority not in steps:
                if not self.ended_by:
                    self.ended_by = "fell off the end of the dialplan"
                raise CallEnded
            step = steps[self.priority]
            self.jumped = False
            self.run_app(step.app, self.substitute(step.args))
            if not self.jumped:
                self.priority += 1
        raise AssertionError("dialplan loop")


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extensions() -> list[Section]:
    return load("extensions.conf")


@pytest.fixture(scope="module")
def dialplan(extensions) -> Dialplan:
    return Dialplan(extensions)


@pytest.fixture(scope="module")
def queues_conf() -> list[Section]:
    return load("queues.conf")


@pytest.fixture(scope="module")
def queue_names(queues_conf) -> set[str]:
    return {s.name for s in concrete(queues_conf) if s.name != "general"}


@pytest.fixture(scope="module")
def manager_conf() -> list[Section]:
    return load("manager.conf")


@pytest.fixture(scope="module")
def pjsip_conf() -> list[Section]:
    return load("pjsip.conf")


def simulate(dialplan, queue_names, backend=None, exten="12345", context="hotline-incoming", **kw) -> Call:
    return Call(dialplan, queue_names, backend or Backend(), **kw).run(context, exten)


def answered_in(*names: str) -> Callable[[str, int], str]:
    return lambda name, n: "ANSWERED" if name in names else "TIMEOUT"


# --------------------------------------------------------------------------------------------------
# extensions.conf: static contract
# --------------------------------------------------------------------------------------------------


def test_every_line_of_the_dialplan_parses(dialplan):
    # Dialplan() asserts App(args) shapes; a ';' inside arguments would start a comment and unbalance them.
    assert {"hotline-incoming", "hotline-call", "hotline-agents"} <= set(dialplan.contexts)


def test_incoming_context_takes_12345_and_the_legacy_numbers(dialplan):
    incoming = dialplan.contexts["hotline-incoming"]
    assert "12345" in incoming
    for number in ("12315", "12369", "12319"):  # old service lines folded into 12345
        assert dialplan.find("hotline-incoming", number) is not None
    assert "_123XX" in incoming


def test_flow_runs_the_incoming_fastagi_handler_with_the_host_from_globals(dialplan):
    agi = {c: s for c, e, s in dialplan.steps() if s.app == "AGI" and e != "h"}  # h: the receipts
    assert set(agi) == {"hotline-call", "hotline-virtual", "hotline-virtual-out", "hotline-agents"}
    assert re.fullmatch(r"agi://\$\{HOTLINE_AGI_HOST\}:\$\{HOTLINE_AGI_PORT\}/incoming", agi["hotline-call"].args)
    assert re.fullmatch(r"agi://\$\{HOTLINE_AGI_HOST\}:\$\{HOTLINE_AGI_PORT\}/virtual\?leg=out",
                        agi["hotline-virtual-out"].args)
    assert dialplan.globals["HOTLINE_AGI_PORT"] == "4573"


def test_every_virtual_call_completes_its_receipt_once(dialplan):
    """Incoming calls complete it in [hotline-virtual]'s h; calls placed from a department's page (their
    originated channel runs [hotline-virtual-out] itself) in that context's h, and only those."""
    for context in ("hotline-virtual", "hotline-virtual-out"):
        h = [s for c, e, s in dialplan.steps() if c == context and e == "h"]
        assert [s.args for s in h if s.app == "AGI"] == ["agi://${HOTLINE_AGI_HOST}:${HOTLINE_AGI_PORT}/virtual?leg=end"]
    out_h = [s for c, e, s in dialplan.steps() if c == "hotline-virtual-out" and e == "h"]
    assert out_h[0].app == "GotoIf" and "VIRTUAL_ORIGINATED" in out_h[0].args


def test_virtual_numbers_never_connect_to_a_guess_and_hide_both_numbers(dialplan):
    steps = [(e, s) for c, e, s in dialplan.steps() if c == "hotline-virtual"]
    apps = [s.app for e, s in steps if e == "_X."]
    # The dial comes only after the call id and the caller ID were checked; refusals and silence are
    # announced, then hung up.
    assert apps.index("Dial") > apps.index("AGI")
    dial = next(s for e, s in steps if s.app == "Dial")
    assert dial.args.startswith("Local/${VIRTUAL_CALL}@hotline-virtual-out/n")
    texts = [s.args for e, s in steps]
    assert "CALLERID(all)=${VIRTUAL_CALLERID}" in texts
    assert "hotline/not-in-service" in texts and "hotline/virtual-unavailable" in texts
    out = [s for c, e, s in dialplan.steps() if c == "hotline-virtual-out" and s.app == "Dial"]
    assert len(out) == 1 and out[0].args.endswith(",I")  # no connected-line update shows the callee's number
    assert dialplan.globals["HOTLINE_AGI_HOST"]


def test_queue_runs_on_hotline_queue_with_queue_prio_set_before(dialplan):
    steps = dialplan.contexts["hotline-call"]["_X."]
    queue = [s for s in steps.values() if s.app == "Queue"]
    assert queue and queue[0].args.split(",")[0] == "${HOTLINE_QUEUE}"
    prio = [s for s in steps.values() if s.app == "Set" and s.args == "QUEUE_PRIO=${HOTLINE_PRIORITY}"]
    assert prio and prio[0].priority < queue[0].priority


def test_the_route_check_accepts_exactly_the_four_queues_of_queues_conf(dialplan, queue_names):
    checked = set()
    for _, _, step in dialplan.steps():
        checked |= set(re.findall(r'"\$\{HOTLINE_QUEUE\}" = "([^"$]+)"', step.args))
    assert checked == KNOWN_QUEUES == queue_names
    assert dialplan.globals["HOTLINE_DEFAULT_QUEUE"] == DEFAULT_QUEUE


def test_guard_is_longer_than_the_backends_own_session_limit(dialplan):
    from config.settings import Settings

    assert float(dialplan.globals["HOTLINE_AGI_GUARD"]) > Settings().agi_session_timeout
    assert dialplan.globals["HOTLINE_DEFAULT_PRIORITY"] == str(Settings().priority_normal)


def test_h_and_T_extensions_exist_where_the_call_runs(dialplan):
    assert "h" in dialplan.contexts["hotline-call"]
    assert "T" in dialplan.contexts["hotline-call"]


def test_agents_context_has_no_route_to_the_public_network(dialplan):
    agents = dialplan.contexts["hotline-agents"]
    dials = [s.args for prios in agents.values() for s in prios.values() if s.app == "Dial"]
    assert dials and all(d.startswith("PJSIP/agent") for d in dials)


# --------------------------------------------------------------------------------------------------
# extensions.conf: the call flow, simulated
# --------------------------------------------------------------------------------------------------


def test_backend_route_is_used_with_its_priority(dialplan, queue_names):
    backend = Backend(
        "ok", {"HOTLINE_QUEUE": "urgent-zh", "HOTLINE_PRIORITY": "10", "HOTLINE_TICKET": "20261128001"}
    )
    call = simulate(dialplan, queue_names, backend, queue_outcome=answered_in("urgent-zh"))
    assert call.agi_urls == ["agi://127.0.0.1:4573/incoming"]
    assert [(q.name, q.priority) for q in call.queue_calls] == [("urgent-zh", "10")]
    assert call.queue_calls[0].absolute_timeout == 0, "the guard must be off once the AGI returned"
    assert "t" in call.queue_calls[0].options
    assert call.answered and call.ended_by == "talked to an agent" and call.h_ran


@pytest.mark.parametrize(
    "backend",
    [
        Backend("refused"),  # nothing listens: AGISTATUS=FAILURE
        Backend("closed"),  # accepted and closed without a word: AGISTATUS=SUCCESS, nothing set
        Backend("failure"),  # "FAILURE ..." line: AGISTATUS=FAILURE
        Backend("ok", {"HOTLINE_PRIORITY": "10"}),  # a priority but no queue
        Backend("ok", {"HOTLINE_QUEUE": "sales", "HOTLINE_PRIORITY": "10"}),  # not one of ours
        Backend("ok", {"HOTLINE_QUEUE": "hotline-zh,x", "HOTLINE_PRIORITY": "10"}),  # option injection
        Backend("ok", {"HOTLINE_QUEUE": 'urgent-zh"', "HOTLINE_PRIORITY": "10"}),  # breaks the quoting
        Backend("ok", {"HOTLINE_QUEUE": "", "HOTLINE_PRIORITY": "10"}),
    ],
    ids=["refused", "closed", "failure", "no-queue", "unknown-queue", "injection", "quote", "empty"],
)
def test_no_usable_route_goes_to_hotline_zh_with_normal_priority(dialplan, queue_names, backend):
    call = simulate(dialplan, queue_names, backend, queue_outcome=answered_in("hotline-zh"))
    assert [(q.name, q.priority) for q in call.queue_calls] == [("hotline-zh", "1")]
    assert call.vars.get("HOTLINE_FALLBACK") == "1"
    assert call.ended_by == "talked to an agent"


@pytest.mark.parametrize("priority", ["", "high", "10;", "1 0", "9" * 3 + "x"])
def test_bad_priority_keeps_the_queue_but_uses_the_normal_priority(dialplan, queue_names, priority):
    backend = Backend("ok", {"HOTLINE_QUEUE": "traffic-zh", "HOTLINE_PRIORITY": priority})
    call = simulate(dialplan, queue_names, backend, queue_outcome=answered_in("traffic-zh"))
    assert [(q.name, q.priority) for q in call.queue_calls] == [("traffic-zh", "1")]


def test_silent_backend_is_cut_by_the_guard_and_the_caller_still_reaches_a_queue(dialplan, queue_names):
    call = simulate(dialplan, queue_names, Backend("silent"), queue_outcome=answered_in("hotline-zh"))
    assert call.guard_fired
    assert [(q.name, q.priority) for q in call.queue_calls] == [("hotline-zh", "1")]
    assert call.queue_calls[0].absolute_timeout == 0
    assert call.ended_by == "talked to an agent"


def test_silent_backend_that_had_set_a_route_keeps_it(dialplan, queue_names):
    backend = Backend("silent", {"HOTLINE_QUEUE": "hotline-en", "HOTLINE_PRIORITY": "1", "HOTLINE_LANG": "en"})
    call = simulate(dialplan, queue_names, backend, queue_outcome=answered_in("hotline-en"))
    assert call.guard_fired and [q.name for q in call.queue_calls] == ["hotline-en"]
    assert call.queue_calls[0].language == "en"


def test_without_agiexitonhangup_the_guard_would_not_free_the_caller(queue_names):
    """Why the dialplan sets AGIEXITONHANGUP: with TIMEOUT(absolute) alone the call stays stuck in AGI."""
    dp = Dialplan(load("extensions.conf"))
    steps = dp.contexts["hotline-call"]["_X."]
    removed = [p for p, step in steps.items() if step.app == "Set" and step.args.startswith("AGIEXITONHANGUP=")]
    assert len(removed) == 1
    steps[removed[0]] = Step(removed[0], None, "NoOp", "AGIEXITONHANGUP not set")
    call = Call(dp, queue_names, Backend("silent")).run("hotline-incoming", "12345")
    assert call.ended_by == "stuck in AGI forever" and not call.queue_calls


def test_language_default_is_zh_and_english_callers_get_english(dialplan, queue_names):
    zh = simulate(dialplan, queue_names, Backend("refused"), queue_outcome=answered_in("hotline-zh"))
    assert zh.queue_calls[0].language == "zh"
    en = simulate(
        dialplan,
        queue_names,
        Backend("ok", {"HOTLINE_QUEUE": "hotline-en", "HOTLINE_PRIORITY": "1", "HOTLINE_LANG": "en"}),
        queue_outcome=answered_in("hotline-en"),
    )
    assert en.queue_calls[0].language == "en"


@pytest.mark.parametrize("status", ["TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"])
def test_a_specialised_queue_that_gives_up_overflows_to_hotline_zh_keeping_priority(dialplan, queue_names, status):
    backend = Backend("ok", {"HOTLINE_QUEUE": "urgent-zh", "HOTLINE_PRIORITY": "10"})
    call = simulate(
        dialplan,
        queue_names,
        backend,
        queue_outcome=lambda name, n: status if name == "urgent-zh" else "ANSWERED",
    )
    assert [(q.name, q.priority) for q in call.queue_calls] == [("urgent-zh", "10"), ("hotline-zh", "10")]
    g = dialplan.globals
    assert [q.wait for q in call.queue_calls] == [g["HOTLINE_QUEUE_WAIT"], g["HOTLINE_GENERAL_WAIT"]]
    assert call.ended_by == "talked to an agent"


def test_when_no_queue_can_take_the_call_the_caller_hears_why_and_the_ticket_number(dialplan, queue_names):
    backend = Backend(
        "ok", {"HOTLINE_QUEUE": "traffic-zh", "HOTLINE_PRIORITY": "1", "HOTLINE_TICKET": "2026112800042"}
    )
    call = simulate(dialplan, queue_names, backend)  # every queue times out
    assert [q.name for q in call.queue_calls] == ["traffic-zh", "hotline-zh"]
    assert call.sounds == ["zh/hotline/all-busy", "zh/hotline/ticket-number", "digits:2026112800042"]
    assert call.ended_by == "Hangup()" and call.h_ran


def test_hotline_zh_giving_up_is_not_retried_and_gets_the_apology(dialplan, queue_names):
    call = simulate(dialplan, queue_names, Backend("refused"), queue_outcome=lambda n, i: "JOINEMPTY")
    assert [q.name for q in call.queue_calls] == ["hotline-zh"]
    assert call.queue_calls[0].wait == dialplan.globals["HOTLINE_GENERAL_WAIT"]
    assert call.sounds == ["zh/hotline/all-busy"]  # no ticket: nothing more to say
    assert call.ended_by == "Hangup()"


def test_apology_falls_back_to_core_sounds_and_never_reads_digits_without_their_prompt(dialplan, queue_names):
    backend = Backend("ok", {"HOTLINE_QUEUE": "hotline-zh", "HOTLINE_PRIORITY": "1", "HOTLINE_TICKET": "123"})
    call = simulate(
        dialplan,
        queue_names,
        backend,
        missing_sounds=frozenset({"hotline/all-busy", "hotline/ticket-number"}),
    )
    assert call.sounds[:3] == ["zh/hotline/all-busy", "zh/all-circuits-busy-now", "zh/pls-try-call-later"]
    assert not any(s.startswith("digits:") for s in call.sounds)
    assert call.ended_by == "Hangup()"


def test_a_ticket_that_is_not_digits_is_not_read_out(dialplan, queue_names):
    backend = Backend("ok", {"HOTLINE_QUEUE": "hotline-zh", "HOTLINE_PRIORITY": "1", "HOTLINE_TICKET": "HL-1"})
    call = simulate(dialplan, queue_names, backend)
    assert call.sounds == ["zh/hotline/all-busy"]


@pytest.mark.parametrize("dialed", ["12345", "12315", "02112345", "+8612345", "88881234"])
def test_every_number_the_carrier_delivers_reaches_the_backend_with_the_dialed_number(
    dialplan, queue_names, dialed
):
    call = simulate(
        dialplan, queue_names, Backend("refused"), exten=dialed, queue_outcome=answered_in("hotline-zh")
    )
    assert call.agi_urls and [q.name for q in call.queue_calls] == ["hotline-zh"]
    assert call.vars["HOTLINE_DIALED"] == dialed.lstrip("+")


@pytest.mark.parametrize("exten", ["s", "abc"])
def test_calls_without_a_usable_number_still_reach_the_hotline(dialplan, queue_names, exten):
    call = simulate(
        dialplan, queue_names, Backend("refused"), exten=exten, queue_outcome=answered_in("hotline-zh")
    )
    assert [q.name for q in call.queue_calls] == ["hotline-zh"]
    assert call.vars["HOTLINE_DIALED"] == "12345"


def test_caller_hanging_up_in_the_ivr_ends_in_h_without_queueing(dialplan, queue_names):
    call = simulate(dialplan, queue_names, Backend("caller-hangup"))
    assert not call.queue_calls and call.h_ran and call.ended_by == "caller hung up"


def test_no_path_ends_in_silence(dialplan, queue_names):
    """Every way a call can leave [hotline-call] is: talking to an agent, or after hearing a message."""
    backends = [Backend(m) for m in ("ok", "refused", "closed", "failure", "silent")]
    outcomes = ["TIMEOUT", "JOINEMPTY", "FULL", "LEAVEEMPTY", "ANSWERED"]
    for backend in backends:
        for first in outcomes:
            for second in outcomes:
                call = simulate(
                    dialplan,
                    queue_names,
                    backend,
                    queue_outcome=lambda name, n, a=first, b=second: a if n == 1 else b,
                )
                assert call.queue_calls, backend
                if call.ended_by != "talked to an agent":
                    assert call.ended_by == "Hangup()" and call.sounds, (backend, first, second)


# --------------------------------------------------------------------------------------------------
# queues.conf
# --------------------------------------------------------------------------------------------------

#: Every queue option app_queue.c (queue_set_param) understands; a typo such as "leaveempty" would be
#: ignored with only a warning in the log.
QUEUE_OPTIONS = {
    "musicclass", "music", "musiconhold", "announce", "context", "timeout", "ringinuse", "setinterfacevar",
    "setqueuevar", "setqueueentryvar", "monitor-format", "membergosub", "queue-youarenext", "queue-thereare",
    "queue-callswaiting", "queue-quantity1", "queue-quantity2", "queue-holdtime", "queue-minutes",
    "queue-minute", "queue-seconds", "queue-thankyou", "queue-callerannounce", "queue-reporthold",
    "announce-frequency", "min-announce-frequency", "announce-round-seconds", "announce-holdtime",
    "announce-position", "announce-position-limit", "announce-position-only-up", "announce-to-first-user",
    "periodic-announce", "periodic-announce-frequency", "periodic-announce-startdelay",
    "relative-periodic-announce", "random-periodic-announce", "retry", "wrapuptime", "penaltymemberslimit",
    "autofill", "monitor-type", "autopause", "autopausedelay", "autopausebusy", "autopauseunavail", "maxlen",
    "servicelevel", "strategy", "joinempty", "leavewhenempty", "reportholdtime", "memberdelay", "weight",
    "timeoutrestart", "defaultrule", "timeoutpriority", "member",
}
EMPTY_CONDITIONS = {"paused", "penalty", "inuse", "ringing", "unavailable", "invalid", "unknown", "wrapup"}


def test_queues_conf_defines_exactly_the_four_queues(queues_conf, queue_names):
    assert queue_names == KNOWN_QUEUES
    for name in KNOWN_QUEUES:
        assert len([s for s in concrete(queues_conf) if s.name == name]) == 1


def test_every_queue_has_the_15_second_service_level_and_the_hotline_settings(queues_conf):
    for section in concrete(queues_conf):
        if section.name == "general":
            continue
        opts = resolved(queues_conf, section)
        assert set(opts) <= QUEUE_OPTIONS, set(opts) - QUEUE_OPTIONS
        assert opts["servicelevel"] == "15"
        assert opts["ringinuse"] == "no"
        assert opts["autofill"] == "yes"
        assert opts["strategy"] in {"leastrecent", "rrmemory"}
        assert 15 <= int(opts["wrapuptime"]) <= 30
        assert opts["musicclass"] == "default"
        assert opts["setinterfacevar"] == "yes" and opts["setqueueentryvar"] == "yes"
        assert "member" not in opts, "agents are dynamic members added by the backend"
        for key in ("joinempty", "leavewhenempty"):
            conditions = set(opts[key].split(","))
            assert conditions <= EMPTY_CONDITIONS
            assert "paused" not in conditions, "briefly paused agents must not turn callers away"
            assert "unavailable" in conditions, "a queue with no reachable agent must not hold callers"


def test_queues_general_section(queues_conf):
    general = [s for s in queues_conf if s.name == "general"]
    assert len(general) == 1
    opts = resolved(queues_conf, general[0])
    assert opts["shared_lastcall"] == "yes"
    assert opts["autofill"] == "yes"


def test_urgent_queue_wins_an_agent_shared_with_other_queues(queues_conf):
    weights = {
        s.name: int(resolved(queues_conf, s)["weight"]) for s in concrete(queues_conf) if s.name != "general"
    }
    assert weights["urgent-zh"] > max(w for n, w in weights.items() if n != "urgent-zh")


# --------------------------------------------------------------------------------------------------
# manager.conf
# --------------------------------------------------------------------------------------------------


def test_manager_binds_to_loopback_and_carries_the_ticket_on_events(manager_conf):
    general = [s for s in manager_conf if s.name == "general"]
    assert len(general) == 1
    opts = resolved(manager_conf, general[0])
    assert opts["enabled"] == "yes"
    assert opts["bindaddr"] == "127.0.0.1"
    assert opts["port"] == "5038"
    assert "HOTLINE_TICKET" in [v.strip() for v in opts["channelvars"].split(",")]


def test_hotline_ami_user_is_restricted(manager_conf):
    users = [s for s in manager_conf if s.name == "hotline"]
    assert len(users) == 1
    user = users[0]
    assert not user.values("channelvars"), "channelvars belongs in [general]"
    keys = [k for k, _, _ in user.items]
    assert keys.index("deny") < keys.index("permit")
    assert user.values("deny") == ["0.0.0.0/0.0.0.0"]
    assert user.values("permit") == ["127.0.0.1/255.255.255.255"]
    assert "CHANGE-ME" in user.values("secret")[0]
    read = set(user.values("read")[0].split(","))
    write = set(user.values("write")[0].split(","))
    assert {"call", "agent", "user"} <= read and "all" not in read  # user: the call-back UserEvent
    assert {"agent", "originate"} <= write
    assert not write & {"all", "system", "command", "config"}


# --------------------------------------------------------------------------------------------------
# pjsip.conf
# --------------------------------------------------------------------------------------------------


def _pjsip_objects(pjsip_conf) -> list[tuple[str, dict[str, str], Section]]:
    return [(s.name, resolved(pjsip_conf, s), s) for s in concrete(pjsip_conf)]


def test_udp_transport_on_5060(pjsip_conf):
    transports = [o for n, o, _ in _pjsip_objects(pjsip_conf) if o.get("type") == "transport"]
    assert any(t["protocol"] == "udp" and t["bind"].endswith(":5060") for t in transports)


def test_agent_template(pjsip_conf):
    template = resolved(pjsip_conf, [s for s in pjsip_conf if s.name == "agent-endpoint"][0])
    assert template["type"] == "endpoint"
    assert template["context"] == "hotline-agents"
    assert template["disallow"] == "all"
    assert set(template["allow"].split(",")) == {"ulaw", "alaw", "g722"}
    assert template["direct_media"] == "no"
    assert template["rtp_symmetric"] == template["force_rport"] == template["rewrite_contact"] == "yes"
    assert template["dtmf_mode"] == "rfc4733"
    aor = resolved(pjsip_conf, [s for s in pjsip_conf if s.name == "agent-aor"][0])
    assert aor["max_contacts"] == "1" and int(aor["qualify_frequency"]) > 0


@pytest.mark.parametrize("agent", ["agent1001", "agent1002"])
def test_example_agents_use_the_templates_and_placeholder_passwords(pjsip_conf, agent):
    objects = {o["type"]: (o, s) for n, o, s in _pjsip_objects(pjsip_conf) if n == agent}
    assert set(objects) == {"endpoint", "auth", "aor"}
    endpoint, endpoint_section = objects["endpoint"]
    assert endpoint_section.bases == ["agent-endpoint"]
    assert objects["auth"][1].bases == ["agent-auth"] and objects["aor"][1].bases == ["agent-aor"]
    assert endpoint["auth"] == agent and endpoint["aors"] == agent
    assert objects["auth"][0]["username"] == agent
    assert objects["auth"][0]["password"].startswith("CHANGE-ME")
    # the extension the agents' context dials for this agent
    assert pattern_match("_1XXX", agent.removeprefix("agent"))


def test_carrier_trunk_template_delivers_into_the_incoming_context(pjsip_conf):
    template = resolved(pjsip_conf, [s for s in pjsip_conf if s.name == "carrier-endpoint"][0])
    assert template["type"] == "endpoint" and template["context"] == "hotline-incoming"
    assert [s for s in pjsip_conf if s.name == "carrier-endpoint"][0].template


def test_no_anonymous_endpoint(pjsip_conf):
    assert not [s for s in concrete(pjsip_conf) if s.name == "anonymous"]


# --------------------------------------------------------------------------------------------------
# the parser itself
# --------------------------------------------------------------------------------------------------


def test_parser_handles_templates_operators_and_comments():
    sections = parse_conf(
        "[t](!)\na = 1 ; comment\n[x](t)\nb => 2\nc = semi\\;colon\n[x](t)\n"
    )
    assert [(s.name, s.template, s.bases) for s in sections] == [
        ("t", True, []),
        ("x", False, ["t"]),
        ("x", False, ["t"]),
    ]
    assert resolved(sections, sections[1]) == {"a": "1", "b": "2", "c": "semi;colon"}
    assert sections[1].items[0] == ("b", "=>", "2")


def test_expression_subset():
    assert evaluate('"a" = "a"') == "1"
    assert evaluate('"a" = "b" | "c" != "d"') == "1"
    assert evaluate('""x" = "y"') == ""  # broken quoting: Asterisk's syntax error, false
    with pytest.raises(Unsupported):
        check_expression_source("${A} + 2")
    check_expression_source('"${A}" != "x-y" | ${B} = 0')
