"""A call to 12345 end to end: simulated Asterisk -> real FastAGI server -> IVR -> queue + ticket.

Storage is real: the ticket lands in SQLite or PostgreSQL, numbers and deferred writes go through
the machine's Redis.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from rq import Queue, SimpleWorker

from hotline.agi import build_server
from agi_scripts.simulator import Caller, place_call
from config import load_settings
from base.db import make_engine, make_session_factory
from hotline.services import Services
from jobs import tickets as jobs
from orders.store import TicketStore
from tests.conftest import REDIS_URL


class Hotline:
    def __init__(self, services, server):
        self.services = services
        self.server = server

    def call(self, **kwargs):
        result = place_call(Caller(**kwargs), *self.server.address, timeout=20)
        assert self.server.wait_idle(20)  # the handler saves the ticket after handing the call back
        ticket = self.services.tickets.get(result.ticket) if result.ticket else None
        return result, ticket


def _start(settings, engine, session_factory, redis_conn):
    services = Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
    server = build_server(services)
    server.start()
    return services, server


@pytest.fixture
def settings(database_url, tmp_path):
    return load_settings(environ={}, data_dir=tmp_path, database_url=database_url, redis_url=REDIS_URL,
                         rq_queue="test-" + uuid.uuid4().hex[:8], agi_port=0, agi_read_timeout=10,
                         sounds_dir=tmp_path / "sounds")


@pytest.fixture
def hotline(settings, engine, session_factory, redis_conn):
    services, server = _start(settings, engine, session_factory, redis_conn)
    yield Hotline(services, server)
    server.shutdown(grace=5)
    Queue(settings.rq_queue, connection=redis_conn).delete(delete_jobs=True)


def _vars(result):
    return {k: v.strip('"') for k, v in result.variables.items()}


@pytest.mark.parametrize("keys, queue, priority, category, urgency, language", [
    (["1", "1"], "hotline-zh", "1", "general", "normal", "zh-CN"),
    (["1", "2"], "urgent-zh", "10", "urgent", "high", "zh-CN"),
    (["1", "3"], "traffic-zh", "1", "traffic", "normal", "zh-CN"),
    (["2", "1"], "hotline-en", "1", "general", "normal", "en"),
    (["2", "2"], "hotline-en", "10", "urgent", "high", "en"),
    (["1", "0"], "hotline-zh", "1", "general", "normal", "zh-CN"),
    (["1", ""], "hotline-zh", "1", "general", "normal", "zh-CN"),  # no input: straight to an agent
    (["", ""], "hotline-zh", "1", "general", "normal", "zh-CN"),  # no language chosen: Mandarin
    (["1", "9", "8"], "hotline-zh", "1", "general", "normal", "zh-CN"),  # invalid twice: to an agent
    (["1", "7", "3"], "traffic-zh", "1", "traffic", "normal", "zh-CN"),  # invalid once, then a choice
])
def test_each_menu_branch_routes_and_opens_a_ticket(hotline, keys, queue, priority, category, urgency, language):
    result, ticket = hotline.call(number="13800138000", keys=keys)
    v = _vars(result)
    assert (v["HOTLINE_QUEUE"], v["HOTLINE_PRIORITY"], v["HOTLINE_LANG"]) == (queue, priority, language)
    assert v["HOTLINE_TICKET"].isdigit()
    assert ticket is not None
    assert (ticket.status, ticket.category, ticket.urgency, ticket.language) == ("queued", category, urgency,
                                                                                language)
    assert ticket.caller_e164 == "+8613800138000" and ticket.caller_kind == "mobile"
    assert ticket.call.outcome == "routed" and ticket.call.ended_at is None
    assert ticket.call.uniqueid == ticket.call.linkedid == result.transcript[6].split(": ", 1)[1]
    assert ticket.ivr_path.startswith("language:")
    assert result.transcript[-1] == "<<< HANGUP"  # the server half-closed and Asterisk said its last word


def test_the_channel_language_follows_the_choice(hotline):
    result, _ = hotline.call(keys=["2", "1"])
    assert _vars(result)["CHANNEL(language)"] == "en"
    assert any(line.startswith(">>> GET DATA hotline/") for line in result.transcript)


def test_ticket_number_is_set_before_the_menu_so_even_an_early_hangup_carries_it(hotline):
    result, ticket = hotline.call(keys=["1", "1"], hangup_at=2)
    commands = [line for line in result.transcript if line.startswith(">>> ")]
    assert commands[0].startswith(">>> SET VARIABLE HOTLINE_TICKET ")
    assert ticket.status == "abandoned_in_ivr"


@pytest.mark.parametrize("hangup_at", range(1, 9))
def test_a_hangup_at_any_step_still_leaves_a_ticket(hotline, hangup_at):
    result, ticket = hotline.call(number="089866668888", keys=["2", "1"], hangup_at=hangup_at)
    assert result.ticket, "the ticket number reached the dialplan"
    assert ticket is not None
    if "HOTLINE_QUEUE" in result.variables:
        assert ticket.status == "queued"
    else:
        assert ticket.status == "abandoned_in_ivr"
        assert ticket.call.outcome == "abandoned_in_ivr" and ticket.call.ended_at is not None
    assert ticket.caller_e164 == "+8689866668888" and ticket.caller_kind == "landline"


def test_status_of_an_existing_ticket_by_phone(hotline):
    first, _ = hotline.call(number="13900139000", keys=["1", "1"])
    number = first.ticket
    result, ticket = hotline.call(number="13900139000", keys=["1", "4", number + "#", ""])
    assert "HOTLINE_QUEUE" not in result.variables  # heard the status, said goodbye, hung up
    assert ">>> HANGUP" in result.transcript
    assert any(line.startswith(">>> STREAM FILE hotline/status-received") for line in result.transcript)
    assert ticket.status == "closed" and ticket.category == "status" and ticket.call.outcome == "status_given"


def test_status_of_an_unknown_ticket(hotline):
    result, _ = hotline.call(keys=["1", "4", "2099010100001#", ""])
    assert any(line.startswith(">>> STREAM FILE hotline/status-not-found") for line in result.transcript)


def test_status_then_zero_reaches_an_agent(hotline):
    first, _ = hotline.call(keys=["1", "1"])
    result, ticket = hotline.call(keys=["1", "4", first.ticket + "#", "0"])
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    assert ticket.status == "queued"


def test_a_caller_who_called_in_the_last_24_hours_gets_a_small_boost(hotline):
    first, _ = hotline.call(number="13700137000", keys=["1", "1"])
    again, _ = hotline.call(number="+86 137 0013 7000", keys=["1", "1"])
    other, _ = hotline.call(number="13600136000", keys=["1", "1"])
    assert _vars(first)["HOTLINE_PRIORITY"] == "1"
    assert _vars(again)["HOTLINE_PRIORITY"] == "2"
    assert _vars(other)["HOTLINE_PRIORITY"] == "1"


@pytest.mark.parametrize("number, kind", [("unknown", "withheld"), ("", "withheld"), ("12345", "service"),
                                          ("abc;DROP", "invalid"), ("+14155550100", "international")])
def test_odd_and_withheld_callers_still_get_a_ticket(hotline, number, kind):
    result, ticket = hotline.call(number=number, keys=["1", "1"])
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    assert ticket.caller_kind == kind


def test_no_menu_profile_sends_callers_straight_to_an_agent(settings, engine, session_factory, redis_conn):
    import dataclasses
    services, server = _start(dataclasses.replace(settings, menu="no-menu"), engine, session_factory, redis_conn)
    try:
        result = place_call(Caller(keys=[]), *server.address)
    finally:
        server.shutdown(grace=5)
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    assert not any(line.startswith(">>> GET DATA") for line in result.transcript)


def test_many_calls_get_distinct_ticket_numbers(hotline):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: hotline.call(number=f"1380013{i:04d}", keys=["1", "1"])[0], range(24)))
    numbers = [r.ticket for r in results]
    assert len(set(numbers)) == 24
    assert all(hotline.services.tickets.get(n) is not None for n in numbers)


def test_database_down_the_call_routes_and_the_ticket_is_written_once_when_it_is_back(
        settings, engine, session_factory, redis_conn):
    """No ticket lost, none doubled: both revisions are deferred to RQ and applied later."""
    down_engine = make_engine("postgresql://postgres@127.0.0.1:1/none", pool_timeout=1,
                              connect_args={"connect_timeout": 1})
    services = Services(settings=settings, engine=down_engine, session_factory=make_session_factory(down_engine),
                        _redis=redis_conn)
    # Ticket numbers come from Redis; its seed would need the (down) database, so seed it now.
    from orders.ticket_numbers import TicketNumberAllocator
    from datetime import datetime, timezone
    allocator = TicketNumberAllocator(redis_conn, session_factory)
    allocator.next(datetime.now(timezone.utc))
    server = build_server(services)
    server.start()
    try:
        result = place_call(Caller(number="13800138000", keys=["1", "2"]), *server.address)
        assert server.wait_idle(20)
    finally:
        server.shutdown(grace=5)
    assert _vars(result)["HOTLINE_QUEUE"] == "urgent-zh"  # the caller was not held up by the outage
    number = result.ticket
    store = TicketStore(session_factory)
    assert store.get(number) is None  # not written yet

    queue = Queue(settings.rq_queue, connection=redis_conn)
    try:
        assert queue.count == 2  # revision 1 (opened) and 2 (queued)
        deferred = [job.args[0] for job in queue.jobs]
        jobs.configure(store)  # the database is "back": the worker writes into the real one
        SimpleWorker([queue], connection=redis_conn).work(burst=True)
        ticket = store.get(number)
        assert ticket is not None and ticket.status == "queued" and ticket.urgency == "high"
        # A second delivery of either revision, in any order, changes nothing.
        for data in reversed(deferred):
            assert jobs.save_ticket_snapshot(data) is False
        assert store.get(number).status == "queued"
    finally:
        jobs.configure(None)
        queue.delete(delete_jobs=True)
        down_engine.dispose()
    total = store.search(_filter(caller_e164="+8613800138000"))[1]
    assert total == 1


def _filter(**kwargs):
    from orders.views import TicketFilter
    return TicketFilter(**kwargs)


def test_no_log_line_carries_the_callers_number(hotline, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    hotline.call(number="13812345678", keys=["1", "2"])
    hotline.call(number="13812345678", keys=["1", "1"], hangup_at=3)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "12345678" not in text


def test_the_classic_process_per_call_script_runs_the_same_handler(settings, engine, session_factory):
    """``AGI(hotline-agi-incoming)``: Asterisk starts the script and talks over its stdin/stdout."""
    import os
    import sys
    from agi_scripts.simulator import place_classic_call

    env = dict(os.environ, HOTLINE_DATA_DIR=str(settings.data_dir), HOTLINE_DATABASE_URL=settings.database_url,
               HOTLINE_REDIS_URL=settings.redis_url, HOTLINE_RQ_QUEUE=settings.rq_queue)
    result, status, stderr = place_classic_call([sys.executable, "-m", "hotline.classic_agi"],
                                                Caller(number="13500135000", keys=["2", "3"]), env)
    assert status == 0, stderr
    assert "13500135000" not in stderr
    v = {k: val.strip('"') for k, val in result.variables.items()}
    assert (v["HOTLINE_QUEUE"], v["HOTLINE_LANG"]) == ("hotline-en", "en")
    ticket = TicketStore(session_factory).get(v["HOTLINE_TICKET"])
    assert ticket is not None and ticket.status == "queued" and ticket.category == "traffic"


def test_a_session_past_its_time_budget_still_queues_the_caller(settings, engine, session_factory, redis_conn):
    """The budget ends the menu, not the call: the caller goes to the default queue and the ticket says so."""
    import dataclasses
    services, server = _start(dataclasses.replace(settings, agi_session_timeout=0.001), engine, session_factory,
                              redis_conn)
    try:
        result = place_call(Caller(keys=["1", "2"]), *server.address)
        assert server.wait_idle(20)
    finally:
        server.shutdown(grace=5)
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    ticket = TicketStore(session_factory).get(result.ticket)
    assert ticket.status == "queued" and ticket.call.outcome == "fallback"


def test_a_broken_menu_lookup_still_queues_the_caller(hotline, monkeypatch):
    def broken(number):
        raise RuntimeError("a bug")
    handler = hotline.server.registry.get("incoming")
    monkeypatch.setattr(handler, "_status_of", broken)
    result, ticket = hotline.call(keys=["1", "4", "2026112800001#"])
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    assert ticket.call.outcome == "fallback"
