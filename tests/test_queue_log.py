"""Asterisk's queue_log read into queue events (queues/queue_log.py): every line of the recorded fixture,
the line formats of app_queue that the recording did not hit, and malformed lines skipped and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues.events import (
    AgentMissed,
    CallAnswered,
    CallCompleted,
    CallerAbandoned,
    CallerGaveUp,
    CallerJoined,
    MemberAdded,
    MemberPaused,
    MemberRemoved,
)
from queues.queue_log import QueueLogReader, parse_line, read_queue_log

ROOT = Path(__file__).resolve().parent.parent

#: The queue_log Asterisk 20.20.1 wrote during the recorded AMI session (tests/fixtures/asterisk/README.md).
FIXTURE = "".join(line + "\n" for line in (ROOT / "tests/fixtures/asterisk/queue_log.txt").read_text().splitlines()
                  if line and not line.startswith("#"))

EXPECTED = [
    [],  # QUEUESTART
    [MemberAdded(1795846268, "support", "SIP/agent2")],
    [MemberPaused(1795846268, "support", "Agent Two", True, "lunch break")],
    [MemberPaused(1795846269, "support", "Agent Two", False, "")],
    [],  # PENALTY: agent presence reads penalties from AMI
    [CallerJoined(1795846271, "support", "1795846271.0", "5551234567", 1)],
    [CallAnswered(1795846274, "support", "1795846271.0", "Agent Two", 3, 2)],
    [CallCompleted(1795846281, "support", "1795846271.0", "Agent Two", 3, 7, "caller")],
    [CallerJoined(1795846288, "support", "1795846287.2", "5557654321", 1)],
    [],  # RINGCANCELED
    [CallerAbandoned(1795846291, "support", "1795846287.2", 3, 1, 1)],
    [CallerJoined(1795846294, "support", "1795846294.4", "5550001111", 1)],
    [AgentMissed(1795846300, "support", "1795846294.4", "Agent Two", 6.0)],
    [],
    [CallerAbandoned(1795846305, "support", "1795846294.4", 11, 1, 1)],
    [CallerJoined(1795846308, "support", "1795846308.8", "5550100", 1)],
    [CallAnswered(1795846311, "support", "1795846308.8", "Agent Two", 3, 2)],
    [CallCompleted(1795846315, "support", "1795846308.8", "Agent Two", 3, 4, "agent")],
    [CallerJoined(1795846319, "support", "1795846319.11", "5550101", 1)],
    [CallAnswered(1795846322, "support", "1795846319.11", "Agent Two", 3, 2)],
    [CallCompleted(1795846326, "support", "1795846319.11", "Agent Two", 3, 4, "caller")],
    [MemberRemoved(1795846333, "support", "SIP/agent2")],
]


@pytest.mark.parametrize("line, events", list(zip(FIXTURE.splitlines(), EXPECTED)), ids=lambda v: str(v)[:40])
def test_every_fixture_line(line, events):
    assert parse_line(line) == events
    assert all(type(e.at) is float for e in parse_line(line))


def test_the_ticket_the_dialplan_passes_as_queues_url_comes_back_with_the_join():
    assert parse_line("1795846271|1795846271.0|hotline-zh|NONE|ENTERQUEUE|2026112800042|13812345678|1") == [
        CallerJoined(1795846271, "hotline-zh", "1795846271.0", "13812345678", 1, "2026112800042")]
    assert parse_line("1|c.1|q|NONE|ENTERQUEUE|http://x/y|555|1")[0].ticket == ""  # a URL of someone else's


def test_the_agent_field_is_the_interface_for_members_and_the_member_name_for_calls():
    assert parse_line("1|MANAGER|q|PJSIP/agent1001|ADDMEMBER|PAUSED") == [
        MemberAdded(1, "q", "PJSIP/agent1001", paused=True)]
    assert parse_line("1|c.1|q|Agent 1001|CONNECT|0|c.2|1")[0].agent == "Agent 1001"


def test_whole_fixture_from_a_file_and_from_lines(tmp_path):
    path = tmp_path / "queue_log"
    path.write_text("# a note\n\n" + FIXTURE)
    expected = [e for events in EXPECTED for e in events]
    reader = read_queue_log(path)
    assert list(reader) == expected and reader.skipped == 0
    assert list(read_queue_log(str(path))) == expected
    assert list(read_queue_log(FIXTURE.splitlines(keepends=True))) == expected


LINES_THE_RECORDING_DID_NOT_HIT = [
    ("1700000000|c.1|q|NONE|EXITWITHTIMEOUT|2|3|60", CallerGaveUp(1700000000, "q", "c.1", 60, "timeout")),
    ("1700000000|c.1|q|NONE|EXITEMPTY|1|1|7", CallerGaveUp(1700000000, "q", "c.1", 7, "empty")),
    ("1700000000|c.1|q|NONE|EXITWITHKEY|5|1|2|9", CallerGaveUp(1700000000, "q", "c.1", 9, "key")),
    ("1700000000|c.1|q|Agent A|TRANSFER|1234|agents|8|40|1",
     CallCompleted(1700000000, "q", "c.1", "Agent A", 8, 40, "transfer")),
    ("1700000000|c.1|q|Agent A|BLINDTRANSFER|1234|agents|8|40|1",
     CallCompleted(1700000000, "q", "c.1", "Agent A", 8, 40, "transfer")),
    ("1700000000|c.1|q|Agent A|ATTENDEDTRANSFER|BRIDGE|0a1b-2c|8|40|1",
     CallCompleted(1700000000, "q", "c.1", "Agent A", 8, 40, "transfer")),
    ("1700000000|NONE|NONE|PJSIP/agent1001|PAUSEALL|", MemberPaused(1700000000, "", "", True, "",
                                                                    "PJSIP/agent1001")),
    ("1700000000|NONE|NONE|PJSIP/agent1001|UNPAUSEALL|", MemberPaused(1700000000, "", "", False, "",
                                                                      "PJSIP/agent1001")),
    ("1700000000|NONE|q|Agent A|PAUSE|meeting|room 2", MemberPaused(1700000000, "q", "Agent A", True,
                                                                   "meeting|room 2")),
    ("1700000000|c.1|q|NONE|ENTERQUEUE|http://x|+8613800138000|4",
     CallerJoined(1700000000, "q", "c.1", "+8613800138000", 4)),
    ("1700000000|c.1|q|NONE|ENTERQUEUE||13800138000", CallerJoined(1700000000, "q", "c.1", "13800138000")),
    ("1700000000|c.1|q|Agent A|CONNECT|12|c.2", CallAnswered(1700000000, "q", "c.1", "Agent A", 12)),
    ("1700000000|c.1|q|Agent A|RINGNOANSWER|15000\n", AgentMissed(1700000000, "q", "c.1", "Agent A", 15.0)),
    ("1700000000.5|c.1|q|NONE|ABANDON|1|2|4\r\n", CallerAbandoned(1700000000.5, "q", "c.1", 4, 1, 2)),
]


@pytest.mark.parametrize("line, event", LINES_THE_RECORDING_DID_NOT_HIT, ids=lambda v: str(v)[:48])
def test_other_app_queue_lines(line, event):
    assert parse_line(line) == [event]


@pytest.mark.parametrize("line", [
    "1700000000|NONE|q|NONE|CONFIGRELOAD|", "1700000000|c.1|q|Agent A|RINGCANCELED|1200",
    "1700000000|NONE|q|PJSIP/a|PENALTY|3", "1700000000|NONE|NONE|NONE|QUEUESTART|", "",
    "1700000000|c.1|q|Agent A|SOMETHINGNEW|1|2",
])
def test_other_events_are_ignored_not_counted_as_malformed(line):
    reader = QueueLogReader([line])
    assert list(reader) == [] and reader.skipped == 0


MALFORMED = [
    "garbage",
    "1700000000|c.1|q",
    "noon|c.1|q|NONE|ENTERQUEUE||1|1",
    "nan|c.1|q|NONE|ENTERQUEUE||1|1",
    "-5|c.1|q|NONE|ENTERQUEUE||1|1",
    "1700000000|c.1|q|Agent A|CONNECT|soon|c.2|1",
    "1700000000|c.1|q|Agent A|CONNECT",
    "1700000000|c.1|q|Agent A|COMPLETECALLER|3",
    "1700000000|c.1|q|NONE|ABANDON|1|1|-3",
    "1700000000|c.1|q|NONE|ABANDON|1|x|3",
    "1700000000|c.1|q|NONE|ENTERQUEUE||138|first",
    "1700000000|c.1||NONE|ENTERQUEUE||1|1",
    "1700000000|NONE|q|NONE|ENTERQUEUE||1|1",
    "1700000000|c.1|q|NONE|EXITWITHTIMEOUT|1|1|1e400",
    "1700000000|MANAGER|q|NONE|ADDMEMBER|",
    "1700000000|c.1|q|Agent A|RINGNOANSWER|",
    "\x00\xff\ufffd|||||",
]


@pytest.mark.parametrize("line", MALFORMED, ids=lambda v: v[:40])
def test_a_malformed_line_gives_nothing(line):
    assert parse_line(line) == []


def test_malformed_lines_are_skipped_and_counted_between_good_ones(tmp_path):
    lines = FIXTURE.splitlines()
    mixed = lines[:8] + MALFORMED + lines[8:]
    reader = QueueLogReader(mixed)
    assert list(reader) == [e for events in EXPECTED for e in events]
    assert reader.skipped == len(MALFORMED) and reader.lines == len(mixed)
    raw = tmp_path / "queue_log"
    raw.write_bytes(b"1700000000|c.1|q|NONE|ENTERQUEUE||\xff\xfe|1\n\xc3\x28|bad\n")
    reader = read_queue_log(raw)
    assert [e.call_id for e in reader] == ["c.1"] and reader.skipped == 1
