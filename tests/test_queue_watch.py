"""The queue watch end to end: a scripted Asterisk (AMI over TCP) -> the link -> live figures, agents' states,
the call-back list and the tickets' history, with real Redis and a real database."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from config import load_settings
from hotline.ami import QueueWatch
from hotline.services import Services
from orders.cases import Casework
from orders.working_days import WorkingCalendar
from queues.callbacks import DIALLING, DONE, OFFERING, WAITING, CallBackList
from queues.presence import AgentPresence
from queues.statistics import QueueStatistics
from tests.ami_peer import AmiPeer, event, response
from tests.orders_fixtures import make_snapshot, store  # noqa: F401 (fixture)

SECRET = "watch-secret"


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def queue_status(entries=()):
    """A QueueStatus answer: one queue 'hotline-zh' with agent 1001 logged in, and ``entries`` waiting."""

    def answer(session, action):
        aid = ("ActionID", action.action_id)
        texts = [response(action, "Queue status will follow", "Success", ("EventList", "start")),
                 event("QueueParams", ("Queue", "hotline-zh"), ("Calls", len(entries)), aid),
                 event("QueueMember", ("Queue", "hotline-zh"), ("Name", "1001"), ("Location", "PJSIP/agent1001"),
                       ("StateInterface", "PJSIP/agent1001"), ("Membership", "dynamic"), ("Penalty", "0"),
                       ("CallsTaken", "0"), ("LastCall", "0"), ("InCall", "0"), ("Status", "1"),
                       ("Paused", "0"), ("PausedReason", ""), aid)]
        for position, (call_id, wait) in enumerate(entries, 1):
            texts.append(event("QueueEntry", ("Queue", "hotline-zh"), ("Position", position),
                               ("Channel", f"PJSIP/carrier-{position}"), ("Uniqueid", call_id),
                               ("CallerIDNum", "13800000000"), ("Wait", wait), aid))
        texts.append(event("QueueStatusComplete", ("EventList", "Complete"), ("ListItems", len(texts) - 1), aid))
        session.send(*texts)

    return answer


@pytest.fixture
def peer():
    with AmiPeer(secret=SECRET) as p:
        p.script["QueueStatus"] = queue_status()
        p.script["Originate"] = lambda s, a: s.send(response(a, "Originate successfully queued"))
        yield p


@pytest.fixture
def services(tmp_path, database_url, engine, session_factory, redis_conn, redis_prefix, peer):
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, ami_secret=SECRET,
                             ami_port=peer.port, ami_action_timeout=10.0)
    made = Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
    # The shared Redis of the suite: this test's keys under its own prefix.
    made.queue_statistics = QueueStatistics.from_settings(redis_conn, settings, prefix=redis_prefix)
    made.presence = AgentPresence(redis_conn, prefix=redis_prefix)
    made.call_backs = CallBackList(session_factory, attempts=2)
    made.casework = Casework(session_factory, WorkingCalendar())
    made.agents.add("1001", "Li Na", "PJSIP/agent1001", queues=[("hotline-zh", 0)])
    return made


@pytest.fixture
def watch(services):
    made = QueueWatch(services)
    made.start(call_back_seconds=3600)  # the test runs the offering rounds itself
    assert made.link.wait_connected(15)
    # The resync after connecting is applied (only QueueStatus says 1001 is logged in): later events win.
    assert wait_until(lambda: services.presence.state("1001").state.value == "available")
    yield made
    made.close()


def test_the_recorded_session_becomes_the_days_figures_and_the_missed_calls(peer, watch, services):
    peer.replay("ami-queue-events.txt")
    stats = services.queue_statistics
    # The events arrive over TCP and are applied in batches: wait for the whole session's figures.
    def counts():
        f = stats.figures("support")
        return f.offered, f.answered, f.abandoned, f.waiting

    assert wait_until(lambda: counts() == (5, 3, 2, 0)), counts()
    assert stats.figures("support").average_speed_of_answer == pytest.approx(3.0)
    # Both abandoned callers go on the call-back list, with their tickets.
    assert wait_until(lambda: len(services.call_backs.listing()) == 2)
    assert {v.ticket for v in services.call_backs.listing()} == {"HL-20261128-0002", "HL-20261128-0003"}
    # The session ends with QueueRemove: the agent is logged out, not left ringing or on a call.
    # (An agent never seen is logged out too, with no "since": wait for the removal itself.)
    assert wait_until(lambda: services.presence.state("Agent Two").since is not None
                      and services.presence.state("Agent Two").state.value == "logged_out")


def test_after_a_reconnect_asterisks_word_on_waiting_callers_and_members_wins(peer, watch, services):
    assert wait_until(lambda: services.presence.state("1001").state.value == "available")
    peer.script["QueueStatus"] = queue_status(entries=[("1795846400.1", 7), ("1795846400.2", 2)])
    logins = peer.logins
    peer.drop()  # Asterisk restarted
    assert peer.wait_for(lambda: peer.logins > logins, 30)
    stats = services.queue_statistics
    assert wait_until(lambda: stats.figures("hotline-zh").waiting == 2)
    assert stats.figures("hotline-zh").longest_wait_seconds >= 7


def test_a_missed_call_is_called_back_by_a_free_agent_and_each_step_lands_on_the_ticket(peer, watch, services, store):
    store.save(make_snapshot("2026112800042", uniqueid="1795846500.1").next(status="queued"))
    assert wait_until(lambda: services.presence.state("1001").state.value == "available")
    peer.push(event("QueueCallerAbandon", ("Queue", "hotline-zh"), ("Uniqueid", "1795846500.1"),
                    ("CallerIDNum", "13812345678"), ("ChanVariable", "HOTLINE_TICKET=2026112800042"),
                    ("Position", "1"), ("OriginalPosition", "1"), ("HoldTime", "40")))
    calls = services.call_backs
    assert wait_until(lambda: [v.state for v in calls.listing()] == [WAITING])
    assert wait_until(lambda: store.get("2026112800042").status == "abandoned_in_queue")

    assert watch.offer_call_backs() == 1
    [originate] = peer.received("Originate")
    assert originate.get("Channel") == "PJSIP/agent1001" and originate.get("Exten") == "13812345678"
    assert originate.get("Context") == "hotline-callback" and originate.get("CallerID") == "12345"
    assert "HOTLINE_TICKET=2026112800042" in originate.all("Variable")
    assert calls.listing()[0].state == OFFERING

    peer.push(event("OriginateResponse", ("ActionID", originate.action_id), ("Response", "Success"),
                    ("Channel", "PJSIP/agent1001-00000007"), ("Reason", "4"), ("Uniqueid", "1795846510.3")))
    assert wait_until(lambda: calls.listing() and calls.listing()[0].state == DIALLING)
    call_back_id = calls.listing()[0].id
    peer.push(event("UserEvent", ("UserEvent", "HotlineCallBack"), ("CallBack", call_back_id),
                    ("DialStatus", "ANSWER")))
    assert wait_until(lambda: calls.listing(states=[DONE]))
    steps = [e for e in services.casework.events("2026112800042") if e.move == "call_back"]
    assert [e.details["step"] for e in steps] == ["offered", "answered_by_agent", "answered"]


def test_a_free_member_the_agents_store_does_not_know_is_skipped_not_a_stop(peer, watch, services):
    peer.push(event("QueueMemberAdded", ("Queue", "hotline-zh"), ("Interface", "SIP/static9"),
                    ("MemberName", "Static Nine"), ("StateInterface", "SIP/static9"), ("Membership", "static"),
                    ("Penalty", "0"), ("Paused", "0"), ("Status", "1")))
    assert wait_until(lambda: services.presence.state("Static Nine").state.value == "available")
    assert [a.code for a in watch.free_agents()] == ["1001"]
    peer.push(event("QueueCallerAbandon", ("Queue", "hotline-zh"), ("Uniqueid", "1795846650.1"),
                    ("CallerIDNum", "13812345670"), ("Position", "1"), ("OriginalPosition", "1"), ("HoldTime", "9")))
    assert wait_until(lambda: len(services.call_backs.listing()) == 1)
    assert watch.offer_call_backs() == 1
    assert [a.get("Channel") for a in peer.received("Originate")] == ["PJSIP/agent1001"]


def test_no_free_agent_means_no_call_and_the_missed_call_waits(peer, watch, services):
    peer.push(event("QueueMemberPause", ("Queue", "hotline-zh"), ("Interface", "PJSIP/agent1001"),
                    ("MemberName", "1001"), ("Paused", "1"), ("PausedReason", "lunch")))
    assert wait_until(lambda: services.presence.state("1001").state.value == "paused")
    peer.push(event("QueueCallerAbandon", ("Queue", "hotline-zh"), ("Uniqueid", "1795846600.1"),
                    ("CallerIDNum", "13812345679"), ("Position", "1"), ("OriginalPosition", "1"), ("HoldTime", "9")))
    assert wait_until(lambda: len(services.call_backs.listing()) == 1)
    assert watch.offer_call_backs() == 0
    assert peer.received("Originate") == []
