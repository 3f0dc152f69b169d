"""The AGI line parsers: property tests (any text gives a reply or a clear error) and recorded examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from agi_scripts.protocol import AGIEnvironment, AGIProtocolError, Reply, parse_env_line, parse_reply
from tests.agi_fixtures import load_sessions


@given(st.text(max_size=300))
def test_parse_reply_gives_a_reply_or_a_protocol_error(line):
    try:
        reply = parse_reply(line)
    except AGIProtocolError:
        return
    assert isinstance(reply, Reply) and 100 <= reply.code <= 999


@given(st.integers(-2, 10**6), st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_characters="\n"),
                                                           max_size=50)),
       st.one_of(st.none(), st.integers(0, 10**7)))
def test_well_formed_200_replies_round_trip(result, data, endpos):
    line = f"200 result={result}" + (f" ({data})" if data is not None else "") + (
        f" endpos={endpos}" if endpos is not None else "")
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data, reply.endpos) == (200, str(result), data, endpos)


@given(st.text(max_size=200))
def test_parse_env_line_gives_a_pair_or_a_protocol_error(line):
    try:
        key, value = parse_env_line(line)
    except AGIProtocolError:
        return
    assert key.startswith("agi_") and isinstance(value, str)


@pytest.mark.parametrize("name", ["fastagi-env-sip.txt", "fastagi-env-local.txt", "fastagi-route-sip.txt"])
def test_recorded_env_blocks(name):
    env = AGIEnvironment(dict(parse_env_line(line) for line in load_sessions(name)[0].env))
    assert env.get("agi_version") == "20.20.1"
    if name == "fastagi-env-local.txt":
        assert env.get("agi_callerid") == "unknown" and env.get("agi_callingpres") == "67"
    else:
        assert env.script == "incoming" and env.query == "x=1" and env.args == ["arg1", "arg two"]
        assert env.get("agi_accountcode") == ""


@pytest.mark.parametrize("line, expected", [
    ("200 result= (timeout)", ("", "timeout", None)),
    ("200 result=5 (timeout)", ("5", "timeout", None)),
    ("200 result=-1 endpos=12160", ("-1", None, 12160)),
    ("200 result=57 endpos=13760", ("57", None, 13760)),
    ("200 result=1 (/ru)", ("1", "/ru", None)),
    ('200 result=1 ("Hotline Test" <5550100>)', ("1", '"Hotline Test" <5550100>', None)),
])
def test_recorded_reply_forms(line, expected):
    reply = parse_reply(line)
    assert (reply.result, reply.data, reply.endpos) == expected
