"""The queue watch's promises with its servers broken for real: a missed call is never lost while the
database is down, and a Redis that restarts empty gets the agents' states back from Asterisk."""

from __future__ import annotations

import time

import pytest

from config import load_settings
from hotline.ami import QueueWatch
from hotline.migrate import upgrade
from hotline.services import build_services
from queues.callbacks import WAITING
from tests.ami_peer import AmiPeer, event
from tests.test_queue_watch import queue_status, wait_until

SECRET = "fault-secret"


@pytest.fixture
def peer():
    with AmiPeer(secret=SECRET) as p:
        p.script["QueueStatus"] = queue_status()
        yield p


@pytest.fixture
def services(tmp_path, pg, redis_server, peer):
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=pg.url, redis_url=redis_server.url,
                             ami_secret=SECRET, ami_port=peer.port, database_connect_timeout=2.0,
                             database_statement_timeout=3.0)
    upgrade(settings.database_url)
    made = build_services(settings)
    made.agents.add("1001", "Li Na", "PJSIP/agent1001", queues=[("hotline-zh", 0)])
    yield made
    made.close()


@pytest.fixture
def watch(services):
    made = QueueWatch(services)
    made.start(call_back_seconds=3600, redis_check_seconds=3600)  # the test runs these rounds itself
    assert made.link.wait_connected(15)
    assert wait_until(lambda: services.presence.state("1001").state.value == "available")
    yield made
    made.close()


def abandon(call_id: str, caller: str):
    return event("QueueCallerAbandon", ("Queue", "hotline-zh"), ("Uniqueid", call_id), ("CallerIDNum", caller),
                 ("Position", "1"), ("OriginalPosition", "1"), ("HoldTime", "30"))


def test_missed_calls_while_the_database_is_killed_reach_the_call_back_list_when_it_returns(peer, watch, services, pg):
    pg.kill()
    peer.push(abandon("1795846700.1", "13812345001"), abandon("1795846700.2", "13812345002"))
    # Applied (the figures count them) while the database is gone:
    assert wait_until(lambda: services.queue_statistics.figures("hotline-zh").abandoned == 2)
    watch.offer_call_backs()  # a round with the database still down: nothing is lost, nothing raised
    pg.start()
    assert wait_until(lambda: (watch.offer_call_backs() is not None
                               and len(services.call_backs.listing(states=[WAITING, "offering"])) == 2), 60)


def test_a_redis_restarted_empty_gets_members_back_from_asterisk(peer, watch, services, redis_server):
    queries = len(peer.received("QueueStatus"))
    redis_server.restart_empty()
    assert services.presence.state("1001").state.value == "logged_out"  # lost with Redis
    assert wait_until(lambda: watch.check_redis(), 30)
    assert len(peer.received("QueueStatus")) > queries
    assert wait_until(lambda: services.presence.state("1001").state.value == "available")
    assert watch.check_redis() is False  # once per loss
