"""TicketSnapshot: validation and the JSON round trip an RQ job or a spool line relies on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders.errors import InvalidSnapshot
from orders.lifecycle import CallOutcome, TicketStatus, Urgency
from orders.snapshot import TicketSnapshot
from tests.orders_fixtures import make_snapshot


def test_round_trip_through_json():
    snap = make_snapshot(
        status=TicketStatus.queued, urgency=Urgency.high, confidential=True, category="water",
        answered_at=datetime(2026, 11, 28, 10, 31, tzinfo=ZoneInfo("Asia/Shanghai")),
        outcome=CallOutcome.routed, ivr_path="language:1>main:2>urgent:1", language="en",
    )
    data = json.loads(json.dumps(snap.to_dict()))
    back = TicketSnapshot.from_dict(data)
    assert back == snap
    assert back.status == "queued" and back.urgency == "high" and back.outcome == "routed"
    assert back.answered_at == datetime(2026, 11, 28, 2, 31, tzinfo=timezone.utc)
    assert back.answered_at.tzinfo == timezone.utc


def test_defaults():
    snap = make_snapshot()
    assert snap.updated_at == snap.created_at == snap.started_at
    assert (snap.status, snap.urgency, snap.channel, snap.language) == ("in_ivr", "normal", "phone", "zh-CN")
    web = TicketSnapshot(number="1", revision=1, caller_raw="", caller_e164=None, caller_kind="withheld",
                         created_at=datetime.now(timezone.utc))
    assert not web.has_call and web.started_at is None


def test_next_revision():
    snap = make_snapshot()
    later = snap.created_at + timedelta(seconds=40)
    nxt = snap.next(now=later, status="queued", outcome="routed", ended_at=later)
    assert (nxt.revision, nxt.status, nxt.updated_at, nxt.created_at) == (2, "queued", later, snap.created_at)
    with pytest.raises(InvalidSnapshot):
        snap.next(revision=5)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"number": "2026-11-28"}, "ticket number must be 1 to 20 digits"),
        ({"number": "1" * 21}, "ticket number"),
        ({"revision": 0}, "revision"),
        ({"revision": True}, "revision"),
        ({"status": "lost"}, "status of ticket 2026112800001 must be one of"),
        ({"urgency": "urgent"}, "urgency"),
        ({"language": "fr"}, "language"),
        ({"caller_kind": "pager"}, "caller_kind"),
        ({"caller_e164": "13800138000"}, "E.164"),
        ({"created_at": datetime(2026, 11, 28, 10, 30)}, "time zone"),
        ({"ended_at": "yesterday"}, "must be a datetime"),
        ({"category": "x" * 51}, "longer than 50"),
        ({"ivr_path": "main:\x00"}, "NUL"),
        ({"confidential": "yes"}, "true or false"),
        ({"outcome": "hung_up"}, "outcome"),
    ],
)
def test_invalid_snapshots(changes, message):
    with pytest.raises(InvalidSnapshot, match=message):
        make_snapshot(**changes)


def test_call_fields_need_a_uniqueid():
    with pytest.raises(InvalidSnapshot, match="no uniqueid"):
        make_snapshot(uniqueid=None)


def test_messages_never_hold_the_callers_number():
    with pytest.raises(InvalidSnapshot) as err:
        make_snapshot(caller_e164="13800138000")
    assert "13800138000" not in str(err.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "JSON object"),
        ({**make_snapshot().to_dict(), "colour": "red"}, "unknown ticket snapshot field"),
        ({k: v for k, v in make_snapshot().to_dict().items() if k != "caller_kind"}, "incomplete"),
        ({**make_snapshot().to_dict(), "created_at": "28/11/2026"}, "ISO 8601"),
    ],
)
def test_from_dict_refuses_junk(data, message):
    with pytest.raises(InvalidSnapshot, match=message):
        TicketSnapshot.from_dict(data)


@given(
    revision=st.integers(1, 10**6),
    status=st.sampled_from(list(TicketStatus)),
    ivr_path=st.text(max_size=50).filter(lambda s: "\x00" not in s),
    moment=st.datetimes(
        timezones=st.sampled_from([timezone.utc, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")])
    ),
)
def test_round_trip_property(revision, status, ivr_path, moment):
    snap = make_snapshot(revision=revision, status=status, ivr_path=ivr_path, created_at=moment, ended_at=moment)
    assert TicketSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
