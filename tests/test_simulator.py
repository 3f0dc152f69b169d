"""The simulated Asterisk behind ``hotline call`` answers as the recorded Asterisk 20 did."""

from __future__ import annotations

import pytest

from agi_scripts.simulator import Caller, SimulatedChannel
from tests.agi_fixtures import load_sessions


def test_env_block_has_the_recorded_keys_in_the_recorded_order():
    recorded = [line.split(":", 1)[0] for line in load_sessions("fastagi-env-sip.txt")[0].env]
    recorded = [k for k in recorded if not k.startswith("agi_arg_")]
    simulated = [line.split(":", 1)[0] for line in SimulatedChannel(Caller()).env_lines() if line]
    assert simulated == recorded


def test_withheld_caller_looks_like_the_recorded_local_channel():
    env = dict(line.split(": ", 1) for line in SimulatedChannel(Caller(number="unknown")).env_lines() if line)
    assert env["agi_callerid"] == "unknown" and env["agi_callingpres"] == "67"


# Commands from fastagi-commands.txt / fastagi-dtmf.txt whose replies do not depend on audio or timing.
RECORDED = [
    ('SET VARIABLE HOTLINE_LANG ru', ["200 result=1"]),
    ('GET VARIABLE HOTLINE_LANG', ["200 result=1 (ru)"]),
    ('SET VARIABLE HOTLINE_NOTE "two words"', ["200 result=1"]),
    ('GET VARIABLE HOTLINE_NOTE', ["200 result=1 (two words)"]),
    ('GET VARIABLE NO_SUCH_VARIABLE', ["200 result=0"]),
    ('FOO BAR', ["510 Invalid or unknown command"]),
    ('200 result=0', ["510 Invalid or unknown command"]),
]


def test_replies_match_the_recordings():
    channel = SimulatedChannel(Caller())
    for command, expected in RECORDED:
        assert channel.respond(command) == expected, command


@pytest.mark.parametrize("command", ["SAY DIGITS", "GET DATA"])
def test_usage_errors_have_the_recorded_multi_line_shape(command):
    reply = SimulatedChannel(Caller()).respond(command)
    assert reply[0] == "520-Invalid command syntax.  Proper usage follows:"
    assert reply[-1] == "520 End of proper usage."


@pytest.mark.parametrize("keys, command, expected", [
    ("1", "GET DATA beep 5000 1", "200 result=1"),
    ("234#", "GET DATA beep 5000 10", "200 result=234"),
    ("", "GET DATA beep 2000 4", "200 result= (timeout)"),
    ("5", "GET DATA beep 3000 4", "200 result=5 (timeout)"),
    ("7", "WAIT FOR DIGIT 5000", "200 result=55"),
    ("", "WAIT FOR DIGIT 2000", "200 result=0"),
])
def test_key_presses_read_as_recorded(keys, command, expected):
    assert SimulatedChannel(Caller(keys=[keys])).respond(command) == [expected]


def test_hangup_during_a_prompt_then_dead_channel_rules_as_recorded():
    channel = SimulatedChannel(Caller(hangup_at=1))
    assert channel.respond('STREAM FILE demo-congrats "#"')[1] == "HANGUP"
    assert channel.respond("GET VARIABLE HOTLINE_TICKET") == ["200 result=0"]
    assert channel.respond('STREAM FILE beep ""') == [
        "511 Command Not Permitted on a dead channel or intercept routine"]
    assert channel.respond('VERBOSE "still here" 1') == ["200 result=1"]


def test_missing_sounds_are_answered_as_recorded_and_the_channel_stays_up():
    """fastagi-missing-sounds.txt: GET DATA -1 with no HANGUP line, STREAM FILE -1 endpos=0, still up."""
    recorded = dict(_exchange(load_sessions("fastagi-missing-sounds.txt")[0]))
    channel = SimulatedChannel(Caller(missing_sounds=True, keys=["1"]))
    for command in ("GET DATA hotline/no-such-prompt 3000 1", 'STREAM FILE hotline/no-such-prompt ""',
                    "CHANNEL STATUS", "GET DATA hotline/no-such-prompt 1000 4",
                    'VERBOSE "still up after missing prompts" 1'):
        assert channel.respond(command) == recorded[command], command
    assert not channel.hung_up and channel.keys == ["1"]  # the caller heard nothing, so pressed nothing


def test_a_hang_up_during_get_data_of_a_missing_sound_is_still_a_hang_up():
    channel = SimulatedChannel(Caller(missing_sounds=True, hangup_at=1))
    assert channel.respond("GET DATA hotline/no-such-prompt 3000 1") == ["200 result=-1", "HANGUP"]
    assert channel.respond("CHANNEL STATUS") == ["511 Command Not Permitted on a dead channel or intercept routine"]


def test_agisighup_no_sends_no_hangup_line_as_recorded():
    recorded = next(s for s in load_sessions("fastagi-hangup.txt") if "AGISIGHUP=no" in s.title)
    assert ("recv", "HANGUP") not in recorded.exchange
    channel = SimulatedChannel(Caller(agisighup=False, hangup_at=1))
    assert channel.respond("GET DATA beep 10000 4") == ["200 result=-1"]
    assert channel.respond('STREAM FILE beep ""') == dict(_exchange(recorded))['STREAM FILE beep ""']


@pytest.mark.parametrize("caller, expected", [
    (Caller(), "0"),
    (Caller(number="unknown"), "67"),
    (Caller(number="13800138000", callingpres=32), "32"),
])
def test_callingpres_can_be_set(caller, expected):
    env = dict(line.split(": ", 1) for line in SimulatedChannel(caller).env_lines() if line)
    assert env["agi_callingpres"] == expected


def test_agi_values_can_be_replaced_or_added_in_place():
    odd = {"agi_dnid": "9" * 70, "agi_channel": "PJSIP/x\x00y", "agi_arg_1": "extra"}
    lines = SimulatedChannel(Caller(env=odd)).env_lines()
    keys = [line.split(":", 1)[0] for line in lines if line]
    assert keys == [line.split(":", 1)[0] for line in SimulatedChannel(Caller()).env_lines() if line] + ["agi_arg_1"]
    env = dict(line.split(": ", 1) for line in lines if line)
    assert {key: env[key] for key in odd} == odd
    assert lines[-1] == ""


def _exchange(session):
    """(command, reply lines) for each command of a recorded session."""
    out, command = [], None
    for kind, line in session.exchange:
        if kind == "send":
            command = line
            out.append((command, []))
        elif kind == "recv" and command is not None and line != "HANGUP":
            out[-1][1].append(line)
    return out
