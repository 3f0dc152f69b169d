"""Menu files: the IVR as data (nodes, targets, prompts in zh-CN and en), checked when loaded.

The schema is documented for operators in ``ivr/menus/README.md``. Every problem found at load
time is a ``MenuError`` naming the file and the node; things that load but look unintended
(unreachable nodes, unused prompts) are ``MenuWarning``s, also kept in ``Menu.warnings``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from base.vocabulary import Language, TicketStatus
from ivr.actions import URGENCIES
from ivr.errors import MenuError, MenuWarning

LANGUAGES = tuple(language.value for language in Language)
TICKET_STATUSES = tuple(status.value for status in TicketStatus)
#: Keys a caller can press to choose; '#' ends the input in GET DATA / Gather, so it is never a choice.
CHOICE_KEYS = frozenset("0123456789*")

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
PROMPT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # becomes a sound file name: keep it portable
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # route categories, hang-up reasons, bundled menu names
STATUS = re.compile(r"^[a-z][a-z0-9_]*$")

_MENUS_PACKAGE = "ivr"
_MENUS_FOLDER = "menus"


# --- the menu model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """Where an input leads: a node id, optionally switching the prompt language on the way."""

    next: str
    language: str | None = None


@dataclass(frozen=True)
class _InputNode:
    """Fields shared by the nodes that wait for keys (how they fail and give up)."""

    id: str
    prompt: str
    timeout_ms: int
    on_no_input: Transition | None
    on_invalid: Transition | None
    on_failure: Transition
    max_failures: int
    invalid_prompt: str | None
    no_input_prompt: str | None

    @property
    def can_fail(self) -> bool:
        """Whether a missing or wrong input can count as a failure here (else on_failure is never taken)."""
        return self.on_no_input is None or self.on_invalid is None


@dataclass(frozen=True)
class MenuNode(_InputNode):
    """Play a prompt and wait for one key; each choice key leads somewhere."""

    choices: Mapping[str, Transition] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketStatusNode(_InputNode):
    """Ask for a ticket number, look the ticket up, play its status prompt, then go on."""

    max_digits: int = 16
    min_digits: int = 1
    statuses: Mapping[str, str] = field(default_factory=dict)
    not_found: str = ""
    next: Transition = Transition("")


@dataclass(frozen=True)
class AnnouncementNode:
    """Play a prompt, then go on without waiting for a key."""

    id: str
    prompt: str
    next: Transition


@dataclass(frozen=True)
class RouteNode:
    """Final: hand the caller to the agent queue for a category (optionally after a prompt)."""

    id: str
    category: str
    urgency: str
    prompt: str | None


@dataclass(frozen=True)
class HangupNode:
    """Final: end the call (optionally after a prompt such as a goodbye)."""

    id: str
    reason: str
    prompt: str | None


Node = MenuNode | TicketStatusNode | AnnouncementNode | RouteNode | HangupNode
FINAL_NODES = (RouteNode, HangupNode)


@dataclass(frozen=True)
class Menu:
    """A loaded, checked menu. Build one with ``load_menu`` or ``parse_menu``."""

    name: str
    source: str
    start: str
    default_language: str
    max_inputs: int
    fallback: str
    nodes: Mapping[str, Node]
    prompts: Mapping[str, Mapping[str, str]]
    description: str = ""
    warnings: tuple[str, ...] = ()
    languages: tuple[str, ...] = LANGUAGES

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise MenuError(f"{self.source}: no node '{node_id}'") from None

    def prompt_ids(self) -> list[str]:
        """Every prompt id of the menu, in file order."""
        return list(self.prompts)

    def prompt_text(self, prompt_id: str, language: str) -> str:
        """The text of a prompt in a language, for the prompt renderer."""
        texts = self.prompts.get(prompt_id)
        if texts is None:
            raise MenuError(f"{self.source}: no prompt '{prompt_id}'")
        if language not in texts:
            raise MenuError(
                f"{self.source}: prompt '{prompt_id}' has no '{language}' text (languages: {', '.join(self.languages)})"
            )
        return texts[language]


# --- loading --------------------------------------------------------------------------------------


def _menus_dir():
    return importlib.resources.files(_MENUS_PACKAGE).joinpath(_MENUS_FOLDER)


def bundled_menus() -> list[str]:
    """Names of the menus shipped in ivr/menus/, e.g. ["default", "no-menu"]."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _menus_dir().iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def load_menu(name_or_path: str) -> Menu:
    """Load a bundled menu by name ("default", "no-menu") or a menu file by path (.yaml / .yml)."""
    text_name = str(name_or_path)
    if text_name.endswith((".yaml", ".yml")) or "/" in text_name or "\\" in text_name:
        path = Path(text_name)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MenuError(f"{source}: no such menu file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MenuError(f"{source}: cannot read the menu file ({exc})") from None
        name = path.stem
    else:
        available = bundled_menus()
        if text_name not in available:
            raise MenuError(
                f"no bundled menu '{text_name}' (bundled: {', '.join(available)}; or give a path to a .yaml file)"
            )
        entry = _menus_dir().joinpath(f"{text_name}.yaml")
        source = f"ivr/menus/{text_name}.yaml"
        text = entry.read_text(encoding="utf-8")
        name = text_name
    return parse_menu(_parse_yaml(text, source), source=source, name=name)


class _MenuYamlLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys: PyYAML would silently keep the last one."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    normal = _normal_key(key)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if normal in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(normal)
        return super().construct_mapping(node, deep)


def _normal_key(key: Any) -> Any:
    hash(key)
    # An unquoted 1 and a quoted "1" are the same choice key.
    return str(key) if isinstance(key, int) and not isinstance(key, bool) else key


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_MenuYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise MenuError(f"{source}: not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise MenuError(f"{source}: not valid YAML: {exc}") from None


# --- checking -------------------------------------------------------------------------------------

_MISSING = object()

_TOP_REQUIRED = {"start", "fallback", "nodes", "prompts"}
_TOP_OPTIONAL = {
    "description", "default_language", "max_inputs", "max_failures", "timeout_ms",
    "invalid_prompt", "no_input_prompt", "dialplan_prompts",
}
_INPUT_OPTIONAL = {
    "timeout_ms", "on_no_input", "on_invalid", "on_failure", "max_failures", "invalid_prompt", "no_input_prompt",
}
_NODE_KEYS = {
    "menu": ({"prompt", "choices"}, _INPUT_OPTIONAL),
    "ticket_status": ({"prompt", "statuses", "not_found", "next"}, _INPUT_OPTIONAL | {"max_digits", "min_digits"}),
    "announcement": ({"prompt", "next"}, set()),
    "route": ({"category"}, {"urgency", "prompt"}),
    "hangup": ({"reason"}, {"prompt"}),
}


class _Checker:
    """Reads the raw YAML data into a Menu, raising a MenuError at the first problem."""

    def __init__(self, data: Any, source: str, name: str):
        self.data = data
        self.source = source
        self.name = name
        self.prompt_refs: dict[str, str] = {}  # prompt id -> first place that uses it
        self.node_refs: list[tuple[str, str]] = []  # (target node id, where it is used)

    def fail(self, where: str | None, message: str) -> MenuError:
        prefix = f"{self.source}: {where}: " if where else f"{self.source}: "
        return MenuError(prefix + message)

    # - small readers -

    def keys(self, where: str | None, data: Any, required: set[str], optional: set[str]) -> None:
        if not isinstance(data, Mapping):
            raise self.fail(where, f"must be a mapping of keys, got {_kind(data)}")
        for key in data:
            if key not in required | optional:
                hint = difflib.get_close_matches(str(key), sorted(required | optional), n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.fail(
                    where, f"unknown key '{key}'{did_you_mean}; allowed: {', '.join(sorted(required | optional))}"
                )
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(where, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    def integer(self, where: str | None, data: Mapping, key: str, default: int, low: int, high: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"'{key}' must be a whole number, got {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(where, f"'{key}' must be between {low} and {high}, got {value}")
        return value

    def text(self, where: str | None, data: Mapping, key: str, pattern: re.Pattern | None = None,
             what: str = "") -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"'{key}' must be a non-empty text, got {_kind(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"'{key}' {value!r} must be {what}")
        return value

    def language(self, where: str | None, value: Any, key: str) -> str:
        if value not in LANGUAGES:
            raise self.fail(where, f"'{key}' must be one of {', '.join(LANGUAGES)}, got {value!r}")
        return value

    def prompt(self, where: str, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"'{key}' must be a prompt id, got {_kind(value)}")
        self.prompt_refs.setdefault(value, f"{where}, '{key}'")
        return value

    def optional_prompt(self, where: str, data: Mapping, key: str, default: str | None) -> str | None:
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        if value is None:
            return None  # an explicit null switches the inherited prompt off
        return self.prompt(where, value, key)

    def target(self, where: str, value: Any, key: str) -> Transition:
        if isinstance(value, Mapping):
            self.keys(f"{where}, '{key}'", value, {"next"}, {"language"})
            node_id, language = value["next"], value.get("language")
            if language is not None:
                self.language(where, language, f"{key}.language")
        else:
            node_id, language = value, None
        if not isinstance(node_id, str) or not node_id:
            raise self.fail(where, f"'{key}' must name a node, got {_kind(node_id)}")
        self.node_refs.append((node_id, f"{where}, '{key}'"))
        return Transition(node_id, language)

    def optional_target(self, where: str, data: Mapping, key: str) -> Transition | None:
        return self.target(where, data[key], key) if key in data else None

    # - the menu -

    def menu(self) -> Menu:
        data = self.data
        self.keys(None, data, _TOP_REQUIRED, _TOP_OPTIONAL)
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail(None, f"'description' must be a text, got {_kind(description)}")
        self.default_language = self.language(None, data.get("default_language", Language.zh_CN.value),
                                              "default_language")
        max_inputs = self.integer(None, data, "max_inputs", 12, 1, 100)
        self.max_failures = self.integer(None, data, "max_failures", 2, 1, 10)
        self.timeout_ms = self.integer(None, data, "timeout_ms", 5000, 500, 120_000)
        self.invalid_prompt = self.optional_prompt("settings", data, "invalid_prompt", None)
        self.no_input_prompt = self.optional_prompt("settings", data, "no_input_prompt", None)
        start = self.text(None, data, "start")
        fallback = self.text(None, data, "fallback")
        self.fallback = Transition(fallback)

        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, Mapping) or not raw_nodes:
            raise self.fail(None, f"'nodes' must be a mapping of node id -> node, got {_kind(raw_nodes)}")
        nodes: dict[str, Node] = {}
        for node_id, raw in raw_nodes.items():
            if not isinstance(node_id, str) or not NODE_ID.match(node_id):
                raise self.fail(
                    f"node {node_id!r}", "a node id must be letters, digits, '-' or '_' (no ':' or '>')"
                )
            nodes[node_id] = self.node(node_id, raw)

        prompts = self.prompts(data["prompts"])
        dialplan_prompts = data.get("dialplan_prompts", [])
        if not isinstance(dialplan_prompts, list) or not all(isinstance(p, str) for p in dialplan_prompts):
            raise self.fail(None, "'dialplan_prompts' must be a list of prompt ids")
        for prompt_id in dialplan_prompts:  # played by asterisk/extensions.conf and queues.conf, not by a node
            self.prompt_refs.setdefault(prompt_id, "dialplan_prompts")

        if start not in nodes:
            raise self.fail(None, f"'start' names an unknown node '{start}'{_suggest(start, nodes)}")
        if fallback not in nodes:
            raise self.fail(None, f"'fallback' names an unknown node '{fallback}'{_suggest(fallback, nodes)}")
        if not isinstance(nodes[fallback], RouteNode):
            raise self.fail(None, f"'fallback' must be a route node (the way to an agent), '{fallback}' is not")
        for node_id, where in self.node_refs:
            if node_id not in nodes:
                raise self.fail(where, f"unknown target node '{node_id}'{_suggest(node_id, nodes)}")
        for prompt_id, where in self.prompt_refs.items():
            if prompt_id not in prompts:
                raise self.fail(where, f"unknown prompt '{prompt_id}'{_suggest(prompt_id, prompts)}")

        notes = self.graph_checks(nodes, start, fallback)
        notes += [
            f"{self.source}: prompt '{p}' is not used by any node" for p in prompts if p not in self.prompt_refs
        ]
        return Menu(
            name=self.name,
            source=self.source,
            start=start,
            default_language=self.default_language,
            max_inputs=max_inputs,
            fallback=fallback,
            nodes=MappingProxyType(nodes),
            prompts=MappingProxyType({k: MappingProxyType(v) for k, v in prompts.items()}),
            description=description,
            warnings=tuple(notes),
        )

    def node(self, node_id: str, raw: Any) -> Node:
        where = f"node '{node_id}'"
        if not isinstance(raw, Mapping):
            raise self.fail(where, f"must be a mapping of keys, got {_kind(raw)}")
        kind = raw.get("type")
        if kind not in _NODE_KEYS:
            raise self.fail(where, f"unknown node type {kind!r}; types: {', '.join(_NODE_KEYS)}")
        required, optional = _NODE_KEYS[kind]
        self.keys(where, raw, required | {"type"}, optional | {"description"})

        if kind == "route":
            urgency = raw.get("urgency", "normal")
            if urgency not in URGENCIES:
                raise self.fail(where, f"'urgency' must be one of {', '.join(URGENCIES)}, got {urgency!r}")
            category = self.text(where, raw, "category", NAME, "lowercase letters, digits, '-' or '_'")
            return RouteNode(node_id, category, urgency, self.optional_prompt(where, raw, "prompt", None))
        if kind == "hangup":
            reason = self.text(where, raw, "reason", NAME, "lowercase letters, digits, '-' or '_'")
            return HangupNode(node_id, reason, self.optional_prompt(where, raw, "prompt", None))
        if kind == "announcement":
            return AnnouncementNode(node_id, self.prompt(where, raw["prompt"], "prompt"),
                                    self.target(where, raw["next"], "next"))

        common = dict(
            id=node_id,
            prompt=self.prompt(where, raw["prompt"], "prompt"),
            timeout_ms=self.integer(where, raw, "timeout_ms", self.timeout_ms, 500, 120_000),
            on_no_input=self.optional_target(where, raw, "on_no_input"),
            on_invalid=self.optional_target(where, raw, "on_invalid"),
            on_failure=self.optional_target(where, raw, "on_failure") or self.fallback,
            max_failures=self.integer(where, raw, "max_failures", self.max_failures, 1, 10),
            invalid_prompt=self.optional_prompt(where, raw, "invalid_prompt", self.invalid_prompt),
            no_input_prompt=self.optional_prompt(where, raw, "no_input_prompt", self.no_input_prompt),
        )
        if kind == "menu":
            return MenuNode(**common, choices=self.choices(where, raw["choices"]))

        max_digits = self.integer(where, raw, "max_digits", 16, 1, 32)
        min_digits = self.integer(where, raw, "min_digits", 1, 1, max_digits)
        statuses = raw["statuses"]
        if not isinstance(statuses, Mapping):
            raise self.fail(where, f"'statuses' must map ticket status -> prompt id, got {_kind(statuses)}")
        status_prompts = {}
        for status, prompt_id in statuses.items():
            if not isinstance(status, str) or not STATUS.match(status):
                raise self.fail(where, f"ticket status {status!r} must be lowercase letters, digits or '_'")
            if status not in TICKET_STATUSES:
                raise self.fail(
                    where, f"unknown ticket status {status!r}{_suggest(status, TICKET_STATUSES)}; "
                           f"ticket statuses: {', '.join(TICKET_STATUSES)}"
                )
            status_prompts[status] = self.prompt(where, prompt_id, f"statuses.{status}")
        return TicketStatusNode(
            **common,
            max_digits=max_digits,
            min_digits=min_digits,
            statuses=MappingProxyType(status_prompts),
            not_found=self.prompt(where, raw["not_found"], "not_found"),
            next=self.target(where, raw["next"], "next"),
        )

    def choices(self, where: str, raw: Any) -> Mapping[str, Transition]:
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail(where, f"'choices' must map keys to nodes, with at least one key, got {_kind(raw)}")
        choices = {}
        for key, target in raw.items():
            normal = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
            if not isinstance(normal, str) or normal not in CHOICE_KEYS:
                why = " ('#' ends the input, it cannot be a choice)" if normal == "#" else ""
                raise self.fail(
                    where, f"invalid choice key {key!r}: a choice is one key of 0-9 or '*', quoted like \"1\"{why}"
                )
            choices[normal] = self.target(where, target, f"choices.{normal}")
        return MappingProxyType(choices)

    def prompts(self, raw: Any) -> dict[str, dict[str, str]]:
        if not isinstance(raw, Mapping):
            raise self.fail(None, f"'prompts' must map prompt id -> texts, got {_kind(raw)}")
        prompts = {}
        for prompt_id, texts in raw.items():
            where = f"prompt {prompt_id!r}"
            if not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id):
                raise self.fail(where, "a prompt id must be lowercase letters, digits, '-' or '_' (it names a sound file)")
            if not isinstance(texts, Mapping):
                raise self.fail(where, f"must map language -> text, got {_kind(texts)}")
            for language in texts:
                if language not in LANGUAGES:
                    raise self.fail(where, f"unknown language {language!r}; languages: {', '.join(LANGUAGES)}")
            for language in LANGUAGES:
                if language not in texts:
                    raise self.fail(where, f"missing the '{language}' text (every prompt needs {' and '.join(LANGUAGES)})")
                if not isinstance(texts[language], str) or not texts[language].strip():
                    raise self.fail(where, f"the '{language}' text must be a non-empty text")
            prompts[prompt_id] = {language: texts[language].strip() for language in LANGUAGES}
        return prompts

    def graph_checks(self, nodes: Mapping[str, Node], start: str, fallback: str) -> list[str]:
        """Refuse nodes that cannot lead to a route or hang-up; note nodes no caller can reach."""
        edges = {node_id: _targets(node) for node_id, node in nodes.items()}
        can_finish = {node_id for node_id, node in nodes.items() if isinstance(node, FINAL_NODES)}
        changed = True
        while changed:
            changed = False
            for node_id, targets in edges.items():
                if node_id not in can_finish and can_finish.intersection(targets):
                    can_finish.add(node_id)
                    changed = True
        trapped = [node_id for node_id in nodes if node_id not in can_finish]
        if trapped:
            listed = ", ".join(f"'{n}'" for n in trapped)
            raise self.fail(
                f"node{'s' if len(trapped) > 1 else ''} {listed}",
                "no route or hangup can be reached from here: a cycle with no way out",
            )

        reached, todo = set(), [start, fallback]  # the fallback is always reachable (the input bound)
        while todo:
            node_id = todo.pop()
            if node_id not in reached:
                reached.add(node_id)
                todo.extend(edges[node_id])
        return [
            f"{self.source}: node '{n}' cannot be reached from start '{start}'" for n in nodes if n not in reached
        ]


def _targets(node: Node) -> list[str]:
    if isinstance(node, AnnouncementNode):
        return [node.next.next]
    if isinstance(node, FINAL_NODES):
        return []
    found = [t.next for t in (node.on_no_input, node.on_invalid) if t is not None]
    if node.can_fail:
        found.append(node.on_failure.next)
    if isinstance(node, MenuNode):
        found.extend(t.next for t in node.choices.values())
    else:
        found.append(node.next.next)
    return found


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _suggest(name: str, known) -> str:
    hint = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def parse_menu(data: Any, source: str = "<menu>", name: str = "menu") -> Menu:
    """Check raw menu data (as read from YAML) and build a Menu; warnings go to ``warnings.warn``."""
    menu = _Checker(data, source, name).menu()
    for note in menu.warnings:
        warnings.warn(note, MenuWarning, stacklevel=2)
    return menu
