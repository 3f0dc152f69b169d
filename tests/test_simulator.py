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
