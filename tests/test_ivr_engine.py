"""The IVR engine as a pure state machine: every branch of the bundled menus, driven without a socket."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from base.vocabulary import TicketStatus as TicketStatuses
from ivr.actions import (
    FINAL_ACTIONS,
    WAITING_ACTIONS,
    CallerHungUp,
    Collect,
    Digits,
    Hangup,
    LookupTicket,
    Play,
    PromptUnavailable,
    Route,
    SetLanguage,
    TicketStatus,
)
from ivr.engine import CallState, Engine, Step
from ivr.errors import CallFinishedError, InputError
from ivr.menu import load_menu
from ivr.simulator import simulate

DEFAULT = Engine(load_menu("default"))
NO_MENU = Engine(load_menu("no-menu"))

AGENT = Route(category="general", urgency="normal")
LANGUAGE_KEYS = {"zh-CN": "1", "en": "2"}
TICKET_STATUSES = [status.value for status in TicketStatuses]

MAIN_MENU = Collect(prompt="main-menu", max_digits=1, timeout_ms=6000)
TICKET_ENTRY = Collect(prompt="enter-ticket-number", max_digits=16, timeout_ms=10000)
STATUS_OPTIONS = Collect(prompt="status-options", max_digits=1, timeout_ms=5000)


def drive(engine: Engine, *inputs) -> Step:
    """Start a call and feed it inputs (a str stands for Digits); return the last step."""
    step = engine.start()
    for item in inputs:
        step = engine.advance(step.state, Digits(item) if isinstance(item, str) else item)
    return step


def assert_step_shape(step: Step) -> None:
    """The contract every step keeps: Play/SetLanguage*, then exactly one waiting or final action."""
    *leading, last = step.actions
    assert all(isinstance(a, (Play, SetLanguage)) for a in leading), step.actions
    assert isinstance(last, WAITING_ACTIONS + FINAL_ACTIONS), step.actions
    assert step.state.finished == isinstance(last, FINAL_ACTIONS)
    if step.state.finished:
        assert (step.state.route, step.state.hangup).count(None) == 1
        assert last in (step.state.route, step.state.hangup)


# --- start and language choice ------------------------------------------------------------------


def test_start_sets_the_default_language_and_asks_for_a_language():
    step = DEFAULT.start()
    assert step.actions == (SetLanguage("zh-CN"), Collect("choose-language", 1, 5000))
    state = step.state
    assert isinstance(state, CallState)
    assert (state.node, state.language, state.path, state.failures, state.steps) == ("language", "zh-CN", (), 0, 0)
    assert not state.finished and state.route is None and state.hangup is None and not state.abandoned


def test_mandarin_goes_to_the_main_menu_without_changing_language():
    step = drive(DEFAULT, "1")
    assert step.actions == (MAIN_MENU,)
    assert step.state.language == "zh-CN"
    assert step.state.path_text == "language:1"
    assert step.state.steps == 1


def test_english_switches_language_before_the_main_menu():
    step = drive(DEFAULT, "2")
    assert step.actions == (SetLanguage("en"), MAIN_MENU)
    assert step.state.language == "en"
    assert step.state.node == "main"


@pytest.mark.parametrize("keys, token", [("", "timeout"), ("9", "invalid"), ("*", "invalid"), ("12", "invalid")])
def test_no_or_wrong_language_key_keeps_mandarin_and_goes_on(keys, token):
    step = drive(DEFAULT, keys)
    assert step.actions == (MAIN_MENU,)
    assert step.state.language == "zh-CN"
    assert step.state.path_text == f"language:{token}"
    assert step.state.failures == 0


# --- main menu ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize(
    "key, route, prompt",
    [
        ("1", Route("general", "normal"), "connecting"),
        ("2", Route("urgent", "high"), "connecting-urgent"),
        ("3", Route("traffic", "normal"), "connecting"),
        ("0", AGENT, "connecting"),
    ],
)
def test_main_menu_choices_route_to_their_queue(language, key, route, prompt):
    step = drive(DEFAULT, LANGUAGE_KEYS[language], key)
    assert step.actions == (Play(prompt), route)
    state = step.state
    assert state.finished and state.route == route and state.hangup is None and not state.abandoned
    assert state.language == language
    assert state.path_text == f"language:{LANGUAGE_KEYS[language]}>main:{key}"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_no_key_on_the_main_menu_goes_straight_to_an_agent(language):
    step = drive(DEFAULT, LANGUAGE_KEYS[language], "")
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.path_text == f"language:{LANGUAGE_KEYS[language]}>main:timeout"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_first_invalid_key_replays_the_main_menu_after_an_invalid_choice_prompt(language):
    step = drive(DEFAULT, LANGUAGE_KEYS[language], "7")
    assert step.actions == (Play("invalid-choice"), MAIN_MENU)
    assert (step.state.node, step.state.failures, step.state.finished) == ("main", 1, False)
    step = DEFAULT.advance(step.state, Digits("3"))
    assert step.actions == (Play("connecting"), Route("traffic", "normal"))
    assert step.state.path_text == f"language:{LANGUAGE_KEYS[language]}>main:invalid>main:3"


@pytest.mark.parametrize("keys", [("7", "8"), ("*", "#*"), ("55", "9")])
def test_two_invalid_keys_on_the_main_menu_reach_an_agent(keys):
    step = drive(DEFAULT, "1", *keys)
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.path_text == "language:1>main:invalid>main:invalid"


def test_invalid_then_silence_on_the_main_menu_reaches_an_agent():
    step = drive(DEFAULT, "1", "7", "")
    assert step.state.route == AGENT
    assert step.state.path_text == "language:1>main:invalid>main:timeout"


def test_a_trailing_hash_is_ignored_and_a_lone_hash_is_no_input():
    assert drive(DEFAULT, "1", "3#").state.route == Route("traffic", "normal")
    assert drive(DEFAULT, "1", "#").state.path_text == "language:1>main:timeout"


# --- ticket status by phone -------------------------------------------------------------------------

EXPECTED_STATUS_PROMPT = {
    "in_ivr": "status-received",
    "queued": "status-received",
    "abandoned_in_ivr": "status-incomplete",
    "abandoned_in_queue": "status-callback",
    "registered": "status-received",
    "returned": "status-received",  # back at the hotline, to be sent to the right department
    "reopened": "status-received",
    "merged": "status-received",  # handled under the ticket it duplicates
    "dispatched": "status-dispatched",
    "accepted": "status-dispatched",
    "in_progress": "status-dispatched",
    "resolved": "status-resolved",
    "replied": "status-resolved",
    "closed": "status-resolved",
    "archived": "status-resolved",
}


def test_status_asks_for_the_ticket_number_then_looks_it_up():
    step = drive(DEFAULT, "1", "4")
    assert step.actions == (TICKET_ENTRY,)
    step = DEFAULT.advance(step.state, Digits("2024112800017"))
    assert step.actions == (LookupTicket("2024112800017"),)
    assert step.state.ticket_number == "2024112800017"
    assert step.state.path_text == "language:1>main:4>status:number"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("status", TICKET_STATUSES)
def test_every_ticket_status_has_its_prompt_then_the_caller_may_leave(language, status):
    step = drive(DEFAULT, LANGUAGE_KEYS[language], "4", "123#", TicketStatus("123", status))
    assert step.actions == (Play(EXPECTED_STATUS_PROMPT[status]), STATUS_OPTIONS)
    step = DEFAULT.advance(step.state, Digits(""))
    assert step.actions == (Play("goodbye"), Hangup("status-given"))
    assert step.state.hangup == Hangup("status-given") and step.state.route is None
    assert step.state.language == language
    assert step.state.path_text == (
        f"language:{LANGUAGE_KEYS[language]}>main:4>status:number>status:{status}>status-options:timeout"
    )


@pytest.mark.parametrize("status", [None, "no_such_status", ""])
def test_unknown_ticket_gets_the_not_found_prompt(status):
    step = drive(DEFAULT, "2", "4", "99", TicketStatus("99", status))
    assert step.actions == (Play("status-not-found"), STATUS_OPTIONS)
    assert step.state.path[-1] == "status:not-found"


def test_zero_after_the_status_reaches_an_agent_who_sees_the_ticket_number():
    step = drive(DEFAULT, "1", "4", "42", TicketStatus("42", "queued"), "0")
    assert step.actions == (Play("connecting"), Route("status", "normal"))
    assert step.state.ticket_number == "42"


@pytest.mark.parametrize("keys", ["5", "*", "00"])
def test_any_other_key_after_the_status_says_goodbye(keys):
    step = drive(DEFAULT, "1", "4", "42", TicketStatus("42", "queued"), keys)
    assert step.actions == (Play("goodbye"), Hangup("status-given"))
    assert step.state.path[-1] == "status-options:invalid"


def test_empty_ticket_number_is_a_failure_and_twice_reaches_an_agent():
    step = drive(DEFAULT, "1", "4", "")
    assert step.actions == (Play("no-input"), TICKET_ENTRY)
    assert step.state.failures == 1
    step = DEFAULT.advance(step.state, Digits(""))
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.path_text == "language:1>main:4>status:timeout>status:timeout"


@pytest.mark.parametrize("bad", ["12*3", "*", "1" * 17])
def test_non_digit_or_too_long_ticket_number_is_invalid(bad):
    step = drive(DEFAULT, "1", "4", bad)
    assert step.actions == (Play("invalid-choice"), TICKET_ENTRY)
    step = DEFAULT.advance(step.state, Digits(bad))
    assert step.state.route == AGENT
    assert step.state.path_text == "language:1>main:4>status:invalid>status:invalid"


def test_failures_count_per_node_and_reset_on_a_good_input():
    step = drive(DEFAULT, "1", "9")
    assert step.state.failures == 1
    step = DEFAULT.advance(step.state, Digits("4"))
    assert (step.state.node, step.state.failures) == ("status", 0)
    step = DEFAULT.advance(step.state, Digits("x1"))
    assert step.state.failures == 1
    step = DEFAULT.advance(step.state, Digits("77"))
    assert (step.state.failures, step.actions[-1]) == (0, LookupTicket("77"))


def test_ticket_number_is_kept_out_of_the_path():
    step = drive(DEFAULT, "1", "4", "31415926", TicketStatus("31415926", "resolved"))
    assert "31415926" not in step.state.path_text


# --- hang-ups, finished calls, odd inputs -------------------------------------------------------------

PREFIXES = [
    (),
    ("1",),
    ("2",),
    ("1", "9"),
    ("1", "4"),
    ("1", "4", ""),
    ("1", "4", "55"),
    ("1", "4", "55", TicketStatus("55", "resolved")),
]


@pytest.mark.parametrize("prefix", PREFIXES, ids=lambda p: ">".join(map(str, p)) or "start")
def test_caller_hang_up_at_any_wait_ends_the_call_as_abandoned(prefix):
    before = drive(DEFAULT, *prefix)
    step = DEFAULT.advance(before.state, CallerHungUp())
    assert step.actions == (Hangup("caller"),)
    state = step.state
    assert state.finished and state.abandoned and state.hangup == Hangup("caller") and state.route is None
    assert state.path[-1] == f"{before.state.node}:hangup"
    assert state.language == before.state.language


def test_advancing_a_finished_call_is_a_typed_error():
    routed = drive(DEFAULT, "1", "1")
    with pytest.raises(CallFinishedError, match="already finished"):
        DEFAULT.advance(routed.state, Digits("1"))
    with pytest.raises(CallFinishedError):
        DEFAULT.advance(routed.state, PromptUnavailable("connecting"))
    hung_up = drive(DEFAULT, CallerHungUp())
    with pytest.raises(CallFinishedError):
        DEFAULT.advance(hung_up.state, CallerHungUp())
    said_goodbye = drive(DEFAULT, "1", "4", "55", TicketStatus("55", "resolved"), "")
    assert said_goodbye.state.hangup == Hangup("status-given")
    with pytest.raises(CallFinishedError):
        DEFAULT.advance(said_goodbye.state, CallerHungUp())


@pytest.mark.parametrize("keys, route, language", [
    (("2", "2"), Route("urgent", "high"), "en"),
    (("1", "3"), Route("traffic", "normal"), "zh-CN"),
    (("1", "4", "55", TicketStatus("55", "queued"), "0"), Route("status", "normal"), "zh-CN"),
])
def test_a_hang_up_after_the_route_keeps_what_the_caller_chose(keys, route, language):
    """During the route's prompt or the hand-over: abandoned, but the route is the caller's choice."""
    routed = drive(DEFAULT, *keys)
    assert routed.state.route == route and not routed.state.abandoned
    step = DEFAULT.advance(routed.state, CallerHungUp())
    assert step.actions == (Hangup("caller"),)
    state = step.state
    assert state.finished and state.abandoned and state.hangup == Hangup("caller")
    assert state.route == route and state.language == language
    assert state.path == (*routed.state.path, f"{routed.state.node}:hangup")
    assert state.steps == routed.state.steps + 1
    with pytest.raises(CallFinishedError):
        DEFAULT.advance(state, CallerHungUp())


def test_a_hang_up_during_the_no_menu_welcome_keeps_the_route():
    state = NO_MENU.advance(NO_MENU.start().state, CallerHungUp()).state
    assert state.abandoned and state.route == Route("general", "normal") and state.path_text == "agent:hangup"


@pytest.mark.parametrize("keys, prompt, path, language", [
    ((), "choose-language", "language:prompt-missing", "zh-CN"),
    (("2",), "main-menu", "language:2>main:prompt-missing", "en"),
    (("1", "4"), "enter-ticket-number", "language:1>main:4>status:prompt-missing", "zh-CN"),
    (("2", "9"), "main-menu", "language:2>main:invalid>main:prompt-missing", "en"),
])
def test_a_prompt_the_driver_cannot_play_sends_the_caller_to_an_agent_in_their_language(keys, prompt, path,
                                                                                        language):
    before = drive(DEFAULT, *keys)
    assert before.actions[-1].prompt == prompt
    step = DEFAULT.advance(before.state, PromptUnavailable(prompt))
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.route == AGENT and not step.state.abandoned
    assert step.state.path_text == path and step.state.language == language
    assert_step_shape(step)


@pytest.mark.parametrize("thing", ["1", None, 1, Route("general", "normal")])
def test_something_that_is_not_an_input_is_a_typed_error(thing):
    with pytest.raises(InputError, match="not an IVR input"):
        DEFAULT.advance(DEFAULT.start().state, thing)


def test_inputs_validate_their_fields():
    with pytest.raises(InputError):
        Digits(None)
    with pytest.raises(InputError):
        TicketStatus(42, "queued")
    with pytest.raises(InputError):
        PromptUnavailable(None)


@pytest.mark.parametrize(
    "inputs",
    [
        ("1", TicketStatus("1", "queued")),  # a status while the main menu waits for a key
        ("1", "4", "55", Digits("1")),  # a key while the engine waits for the lookup
        ("1", "4", "55", TicketStatus("56", "resolved")),  # the status of another ticket
    ],
)
def test_an_input_of_the_wrong_kind_safely_reaches_an_agent(inputs):
    step = drive(DEFAULT, *inputs)
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.path[-1].endswith(":unexpected")


def test_a_state_naming_a_node_the_menu_no_longer_has_safely_reaches_an_agent():
    state = replace(drive(DEFAULT, "1").state, node="removed-in-a-menu-update")
    step = DEFAULT.advance(state, Digits("1"))
    assert step.actions == (Play("connecting"), AGENT)
    assert step.state.path[-1] == "removed-in-a-menu-update:unexpected"


def test_the_ivr_package_stays_free_of_telephony_web_and_storage_libraries():
    code = (
        "import sys, ivr.actions, ivr.engine, ivr.menu, ivr.prompts, ivr.simulator\n"
        "bad = {'asterisk', 'pyst2', 'twilio', 'flask', 'redis', 'sqlalchemy', 'agi_scripts', 'hotline'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_states_are_immutable_values():
    step = DEFAULT.start()
    with pytest.raises(AttributeError):
        step.state.node = "main"  # type: ignore[misc]
    assert DEFAULT.advance(step.state, Digits("1")).state != step.state
    assert DEFAULT.advance(step.state, Digits("1")) == DEFAULT.advance(step.state, Digits("1"))


# --- no-menu profile, the input bound, the simulator ----------------------------------------------


def test_no_menu_profile_routes_at_once_after_a_welcome():
    step = NO_MENU.start()
    assert step.actions == (SetLanguage("zh-CN"), Play("welcome"), Route("general", "normal"))
    assert step.state.finished and step.state.steps == 0 and step.state.path == ()
    with pytest.raises(CallFinishedError):
        NO_MENU.advance(step.state, Digits("1"))


LOOPY_MENU = {
    "start": "main",
    "max_inputs": 5,
    "fallback": "agent",
    "nodes": {
        "main": {"type": "menu", "prompt": "menu", "choices": {"*": "main", "1": "info", "2": "agent"}},
        "info": {"type": "announcement", "prompt": "info", "next": "main"},
        "agent": {"type": "route", "category": "general", "urgency": "normal"},
    },
    "prompts": {p: {"zh-CN": p, "en": p} for p in ("menu", "info")},
}


@pytest.fixture(scope="module")
def loopy_engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("menus") / "loopy.yaml"
    path.write_text(yaml.safe_dump(LOOPY_MENU), encoding="utf-8")
    return Engine(load_menu(str(path)))


def test_the_input_bound_routes_a_looping_caller_to_an_agent(loopy_engine):
    step = loopy_engine.start()
    for n in range(1, 5):
        step = loopy_engine.advance(step.state, Digits("*" if n % 2 else "1"))
        assert not step.state.finished
    step = loopy_engine.advance(step.state, Digits("*"))
    assert step.actions == (AGENT,)
    assert step.state.steps == 5
    assert step.state.path_text == "main:*>main:1>main:*>main:1>main:*>main:limit"


def test_simulator_answers_collects_and_lookups():
    transcript = simulate(DEFAULT, keys=["2", "4", "77"], tickets={"77": "dispatched"})
    assert transcript.state.hangup == Hangup("status-given")
    assert transcript.prompts() == [
        "choose-language", "main-menu", "enter-ticket-number", "status-dispatched", "status-options", "goodbye"
    ]
    assert transcript.final == Hangup("status-given")
    assert SetLanguage("en") in transcript.actions


def test_simulator_can_lack_a_prompt():
    transcript = simulate(DEFAULT, keys=["2", "1"], missing_prompts={"main-menu"})
    assert transcript.final == AGENT and transcript.state.language == "en"
    assert transcript.state.path_text == "language:2>main:prompt-missing"


def test_simulator_can_hang_up_after_some_inputs():
    transcript = simulate(DEFAULT, keys=["1", "9", "9"], hang_up_after=2)
    assert transcript.state.abandoned
    assert transcript.state.path_text == "language:1>main:invalid>main:hangup"


# --- property: whatever the caller (or a confused driver) sends, the call ends, boundedly ------------

TOKEN = re.compile(
    r"^[A-Za-z0-9_-]+:([0-9*]|timeout|invalid|number|not-found|hangup|prompt-missing|limit|unexpected|[a-z][a-z0-9_]*)$"
)

keys = st.one_of(
    st.text(alphabet="0123456789*#", max_size=20),
    st.just(""),
    st.sampled_from(["1", "2", "3", "4", "0", "#", "*", "9" * 40]),
    st.text(max_size=5),  # whatever a broken driver might pass through
)
events = st.one_of(
    keys.map(lambda k: ("keys", k)),
    st.sampled_from(TICKET_STATUSES + [None, "bogus"]).map(lambda s: ("status", s)),
    st.booleans().map(lambda same: ("status-of-other-ticket", same)),
    st.just(("hangup", None)),
    st.just(("prompt-missing", None)),
)


def run_random_call(engine: Engine, script: list[tuple[str, object]]) -> Step:
    step = engine.start()
    assert_step_shape(step)
    feed = iter(script)
    inputs = 0
    while not step.state.finished:
        waiting = step.actions[-1]
        kind, value = next(feed, ("eof", None))
        if kind == "hangup":
            item = CallerHungUp()
        elif kind == "keys":
            item = Digits(value)
        elif kind == "status":
            number = waiting.number if isinstance(waiting, LookupTicket) else "1"
            item = TicketStatus(number, value)
        elif kind == "status-of-other-ticket":
            item = TicketStatus("x", "resolved")
        elif kind == "prompt-missing":
            item = PromptUnavailable(getattr(waiting, "prompt", "x"))
        elif isinstance(waiting, LookupTicket):
            item = TicketStatus(waiting.number, None)
        else:
            item = Digits("")
        step = engine.advance(step.state, item)
        inputs += 1
        assert_step_shape(step)
        assert step.state.steps == inputs
        assert inputs <= engine.menu.max_inputs
    assert all(TOKEN.match(token) for token in step.state.path), step.state.path
    with pytest.raises(CallFinishedError):
        engine.advance(step.state, Digits("1"))
    return step


@settings(max_examples=300, deadline=None)
@given(script=st.lists(events, max_size=30))
def test_any_input_sequence_ends_in_a_route_or_hangup_on_the_default_menu(script):
    step = run_random_call(DEFAULT, script)
    assert step.state.route is not None or step.state.hangup is not None


looping_events = st.one_of(st.sampled_from(["*", "1", "*#"]).map(lambda k: ("keys", k)), events)


@settings(max_examples=200, deadline=None)
@given(script=st.lists(looping_events, max_size=30))
def test_any_input_sequence_ends_within_the_bound_on_a_looping_menu(loopy_engine, script):
    run_random_call(loopy_engine, script)


@given(script=st.lists(events, max_size=5))
def test_no_menu_profile_ends_before_any_input(script):
    assert run_random_call(NO_MENU, script).state.steps == 0
