"""Menu files: the bundled menus load, and every kind of mistake an operator can make is named clearly."""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from base.vocabulary import Language, TicketStatus, Urgency
from ivr.actions import URGENCIES
from ivr.errors import MenuError, MenuWarning
from ivr.menu import (
    LANGUAGES,
    AnnouncementNode,
    MenuNode,
    RouteNode,
    TicketStatusNode,
    Transition,
    bundled_menus,
    load_menu,
)

MENUS_DIR = Path(__file__).resolve().parent.parent / "ivr" / "menus"
TICKET_STATUSES = {status.value for status in TicketStatus}

# A small valid menu; each error test breaks one thing in a copy of it.
BASE = {
    "start": "main",
    "fallback": "agent",
    "invalid_prompt": "sorry",
    "nodes": {
        "main": {
            "type": "menu",
            "prompt": "menu",
            "choices": {"1": "agent", "2": {"next": "status", "language": "en"}, "3": "bye"},
        },
        "status": {
            "type": "ticket_status",
            "prompt": "number",
            "statuses": {"resolved": "done"},
            "not_found": "sorry",
            "next": "bye",
        },
        "agent": {"type": "route", "category": "general", "urgency": "normal"},
        "bye": {"type": "hangup", "reason": "caller-done", "prompt": "bye"},
    },
    "prompts": {p: {"zh-CN": f"{p} 中文", "en": f"{p} english"} for p in ("menu", "number", "done", "sorry", "bye")},
}


def write(tmp_path: Path, data, name: str = "menu.yaml") -> str:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return str(path)


def broken(tmp_path: Path, change) -> str:
    data = copy.deepcopy(BASE)
    change(data)
    return write(tmp_path, data)


def assert_menu_error(path: str, *fragments: str) -> str:
    with pytest.raises(MenuError) as caught:
        load_menu(path)
    message = str(caught.value)
    assert message.startswith(path), message  # the file is named first
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- bundled menus ----------------------------------------------------------------------------------


def test_bundled_menus_are_listed():
    assert bundled_menus() == ["default", "no-menu"]


@pytest.mark.parametrize("name", ["default", "no-menu"])
def test_bundled_menus_load_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        menu = load_menu(name)
    assert menu.name == name and menu.warnings == ()
    assert menu.languages == LANGUAGES == ("zh-CN", "en")
    assert menu.default_language == "zh-CN"
    for prompt_id in menu.prompt_ids():
        for language in menu.languages:
            assert menu.prompt_text(prompt_id, language).strip()


def test_default_menu_shape():
    menu = load_menu("default")
    assert menu.start == "language" and menu.fallback == "agent" and menu.max_inputs == 12
    main = menu.node("main")
    assert isinstance(main, MenuNode)
    assert set(main.choices) == {"0", "1", "2", "3", "4"}
    assert menu.node("language").choices["2"] == Transition("main", "en")
    assert menu.prompt_text("main-menu", "en").startswith("For enquiries")
    assert "请按" in menu.prompt_text("main-menu", "zh-CN")


def test_default_menu_speaks_to_every_ticket_status():
    status = load_menu("default").node("status")
    assert isinstance(status, TicketStatusNode)
    assert set(status.statuses) == TICKET_STATUSES


def test_no_menu_profile_has_no_input_node():
    menu = load_menu("no-menu")
    assert not any(isinstance(n, (MenuNode, TicketStatusNode)) for n in menu.nodes.values())
    assert isinstance(menu.node(menu.start), AnnouncementNode)
    assert isinstance(menu.node("agent"), RouteNode)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_menu_loads_from_a_path(tmp_path, suffix):
    path = tmp_path / f"city{suffix}"
    shutil.copy(MENUS_DIR / "default.yaml", path)
    menu = load_menu(str(path))
    assert menu.name == "city" and menu.source == str(path)


def test_a_small_menu_loads_and_keeps_its_defaults(tmp_path):
    menu = load_menu(write(tmp_path, BASE))
    main = menu.node("main")
    assert main.timeout_ms == 5000 and main.max_failures == 2
    assert main.invalid_prompt == "sorry" and main.no_input_prompt is None
    assert main.on_failure == Transition("agent")
    assert menu.prompt_ids() == ["menu", "number", "done", "sorry", "bye"]


def test_an_unquoted_digit_key_is_accepted(tmp_path):
    text = Path(write(tmp_path, BASE)).read_text(encoding="utf-8").replace("'1': agent", "1: agent")
    assert "1: agent" in text
    assert "1" in load_menu(write(tmp_path, text)).node("main").choices


def test_prompt_lookups_name_the_problem():
    menu = load_menu("default")
    with pytest.raises(MenuError, match="no prompt 'nope'"):
        menu.prompt_text("nope", "en")
    with pytest.raises(MenuError, match="no 'fr' text"):
        menu.prompt_text("main-menu", "fr")
    with pytest.raises(MenuError, match="no node 'nope'"):
        menu.node("nope")


# --- loading errors ---------------------------------------------------------------------------------


def test_unknown_bundled_name_lists_the_bundled_menus():
    with pytest.raises(MenuError, match=r"no bundled menu 'nope' \(bundled: default, no-menu"):
        load_menu("nope")


def test_missing_file(tmp_path):
    assert_menu_error(str(tmp_path / "gone.yaml"), "no such menu file")


def test_yaml_syntax_error_names_the_line(tmp_path):
    assert_menu_error(write(tmp_path, "start: main\nnodes: [\n  oops: {\n"), "not valid YAML (line")


def test_duplicate_keys_are_refused(tmp_path):
    text = "start: a\nfallback: a\nnodes:\n  a: {type: route, category: x}\n  a: {type: route, category: y}\nprompts: {}\n"
    assert_menu_error(write(tmp_path, text), "duplicate key 'a'", "line 5")


def test_quoted_and_unquoted_key_are_the_same_choice(tmp_path):
    text = Path(write(tmp_path, BASE)).read_text(encoding="utf-8").replace("'3': bye", "'3': bye\n      3: agent")
    assert_menu_error(write(tmp_path, text), "duplicate key 3")


def test_top_level_must_be_a_mapping(tmp_path):
    assert_menu_error(write(tmp_path, "- just\n- a list\n"), "must be a mapping of keys, got a list")


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    path = broken(tmp_path, lambda d: d.update(max_input=3))
    assert_menu_error(path, "unknown key 'max_input'", "did you mean 'max_inputs'")


@pytest.mark.parametrize("key", ["start", "fallback", "nodes", "prompts"])
def test_missing_top_level_key(tmp_path, key):
    assert_menu_error(broken(tmp_path, lambda d: d.pop(key)), f"missing key {key}")


def test_unknown_start_node(tmp_path):
    assert_menu_error(broken(tmp_path, lambda d: d.update(start="mian")), "'start' names an unknown node 'mian'",
                      "did you mean 'main'")


def test_fallback_must_be_a_route(tmp_path):
    assert_menu_error(broken(tmp_path, lambda d: d.update(fallback="bye")), "'fallback' must be a route node")


def test_unknown_target_node(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["main"]["choices"].update({"4": "agnet"}))
    assert_menu_error(path, "node 'main', 'choices.4': unknown target node 'agnet'", "did you mean 'agent'")


def test_unknown_target_in_next_and_on_failure(tmp_path):
    assert_menu_error(broken(tmp_path, lambda d: d["nodes"]["status"].update(next="nowhere")),
                      "node 'status', 'next': unknown target node 'nowhere'")
    assert_menu_error(broken(tmp_path, lambda d: d["nodes"]["main"].update(on_failure="nowhere")),
                      "node 'main', 'on_failure': unknown target node 'nowhere'")


def test_missing_prompt_id(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["status"].update(not_found="not-found"))
    assert_menu_error(path, "node 'status', 'not_found': unknown prompt 'not-found'")


def test_missing_settings_prompt(tmp_path):
    assert_menu_error(broken(tmp_path, lambda d: d.update(no_input_prompt="silence")), "unknown prompt 'silence'")


def test_prompt_missing_a_language(tmp_path):
    path = broken(tmp_path, lambda d: d["prompts"]["menu"].pop("en"))
    assert_menu_error(path, "prompt 'menu'", "missing the 'en' text")


def test_prompt_with_an_unknown_language(tmp_path):
    path = broken(tmp_path, lambda d: d["prompts"]["menu"].update(fr="menu"))
    assert_menu_error(path, "prompt 'menu'", "unknown language 'fr'")


def test_prompt_with_empty_text(tmp_path):
    path = broken(tmp_path, lambda d: d["prompts"]["menu"].update({"zh-CN": "  "}))
    assert_menu_error(path, "prompt 'menu'", "'zh-CN' text must be a non-empty text")


def test_prompt_id_must_be_a_safe_file_name(tmp_path):
    path = broken(tmp_path, lambda d: d["prompts"].update({"Main Menu": {"zh-CN": "x", "en": "x"}}))
    assert_menu_error(path, "prompt 'Main Menu'", "names a sound file")


def test_unknown_node_type(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["agent"].update(type="queue"))
    assert_menu_error(path, "node 'agent'", "unknown node type 'queue'", "menu, ticket_status, announcement")


def test_node_missing_a_key(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["agent"].pop("category"))
    assert_menu_error(path, "node 'agent'", "missing key category")


def test_node_with_an_unknown_key_suggests_the_right_one(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["main"].update(choises={}))
    assert_menu_error(path, "node 'main'", "unknown key 'choises'", "did you mean 'choices'")


def test_node_id_cannot_hold_path_separators(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"].update({"a:b": {"type": "route", "category": "x"}}))
    assert_menu_error(path, "node 'a:b'", "no ':' or '>'")


@pytest.mark.parametrize("key, why", [("#", "'#' ends the input"), ("12", "one key"), ("a", "one key"),
                                      (10, "one key"), (True, "one key")])
def test_invalid_digit_keys(tmp_path, key, why):
    path = broken(tmp_path, lambda d: d["nodes"]["main"]["choices"].update({key: "agent"}))
    assert_menu_error(path, "node 'main'", "invalid choice key", why)


def test_a_menu_needs_choices(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["main"].update(choices={}))
    assert_menu_error(path, "node 'main'", "at least one key")


def test_invalid_urgency(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["agent"].update(urgency="urgent"))
    assert_menu_error(path, "node 'agent'", "'urgency' must be one of normal, high")


@pytest.mark.parametrize("where, change", [
    ("settings", lambda d: d.update(default_language="zh")),
    ("choice", lambda d: d["nodes"]["main"]["choices"].update({"2": {"next": "status", "language": "EN"}})),
])
def test_invalid_language(tmp_path, where, change):
    assert_menu_error(broken(tmp_path, change), "must be one of zh-CN, en")


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(max_inputs=0), "'max_inputs' must be between 1 and 100"),
    (lambda d: d.update(timeout_ms="5s"), "'timeout_ms' must be a whole number"),
    (lambda d: d["nodes"]["main"].update(max_failures=True), "'max_failures' must be a whole number"),
    (lambda d: d["nodes"]["status"].update(max_digits=64), "'max_digits' must be between 1 and 32"),
    (lambda d: d["nodes"]["status"].update(max_digits=4, min_digits=6), "'min_digits' must be between 1 and 4"),
])
def test_numbers_out_of_range(tmp_path, change, fragment):
    assert_menu_error(broken(tmp_path, change), fragment)


def test_choice_target_mapping_needs_next(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["main"]["choices"].update({"2": {"language": "en"}}))
    assert_menu_error(path, "node 'main', 'choices.2'", "missing key next")


def test_bad_ticket_status_name(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"]["status"]["statuses"].update({"In Progress": "done"}))
    assert_menu_error(path, "node 'status'", "ticket status 'In Progress'")


@pytest.mark.parametrize("status, hint", [("resolvd", "did you mean 'resolved'?"), ("lost", "")])
def test_a_status_that_is_no_ticket_status_is_refused(tmp_path, status, hint):
    path = broken(tmp_path, lambda d: d["nodes"]["status"]["statuses"].update({status: "done"}))
    assert_menu_error(path, "node 'status'", f"unknown ticket status '{status}'", hint, "abandoned_in_queue")


def test_the_menu_words_are_the_shared_vocabulary():
    assert LANGUAGES == tuple(language.value for language in Language)
    assert URGENCIES == tuple(urgency.value for urgency in Urgency)


@pytest.mark.parametrize("name", ["default", "no-menu"])
def test_every_ticket_status_has_a_spoken_answer_in_each_bundled_menu(name):
    menu = load_menu(name)
    for node in menu.nodes.values():
        if isinstance(node, TicketStatusNode):
            assert set(node.statuses) == TICKET_STATUSES, f"{name}: node '{node.id}'"
            for prompt_id in node.statuses.values():
                assert all(menu.prompt_text(prompt_id, language) for language in LANGUAGES)


def test_announcement_cycle_with_no_way_out(tmp_path):
    def change(d):
        d["nodes"]["main"]["choices"]["4"] = "ad1"
        d["nodes"]["ad1"] = {"type": "announcement", "prompt": "menu", "next": "ad2"}
        d["nodes"]["ad2"] = {"type": "announcement", "prompt": "menu", "next": "ad1"}
    assert_menu_error(broken(tmp_path, change), "nodes 'ad1', 'ad2'", "cycle with no way out")


def test_menu_cycle_with_no_way_out(tmp_path):
    def change(d):
        d["nodes"]["main"]["choices"]["4"] = "trap"
        d["nodes"]["trap"] = {"type": "menu", "prompt": "menu", "choices": {"1": "trap"},
                              "on_no_input": "trap", "on_invalid": "trap", "on_failure": "agent"}
    # on_failure is never taken when both on_no_input and on_invalid are set, so it is no way out.
    assert_menu_error(broken(tmp_path, change), "node 'trap'", "no route or hangup can be reached")


def test_cycle_with_a_way_out_is_fine(tmp_path):
    menu = load_menu(broken(tmp_path, lambda d: d["nodes"]["main"]["choices"].update({"*": "main"})))
    assert menu.node("main").choices["*"] == Transition("main")


def test_unreachable_node_is_a_warning(tmp_path):
    path = broken(tmp_path, lambda d: d["nodes"].update(orphan={"type": "route", "category": "x"}))
    with pytest.warns(MenuWarning, match="node 'orphan' cannot be reached from start 'main'"):
        menu = load_menu(path)
    assert any("orphan" in note for note in menu.warnings)


def test_unused_prompt_is_a_warning(tmp_path):
    path = broken(tmp_path, lambda d: d["prompts"].update(spare={"zh-CN": "x", "en": "x"}))
    with pytest.warns(MenuWarning, match="prompt 'spare' is not used"):
        load_menu(path)


def test_menu_is_read_only():
    menu = load_menu("default")
    with pytest.raises(TypeError):
        menu.nodes["main"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        menu.prompts["goodbye"]["en"] = "bye"  # type: ignore[index]
