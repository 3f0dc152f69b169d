"""A call to 12345 end to end: simulated Asterisk -> real FastAGI server -> IVR -> queue + ticket.

Storage is real: the ticket lands in SQLite or PostgreSQL, numbers and deferred writes go through
the machine's Redis.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import threading
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings
from hypothesis import strategies as st
from rq import Queue

from hotline.agi import build_server
from agi_scripts import ivr_driver
from agi_scripts.handlers.incoming import presentation_restricted
from agi_scripts.simulator import Caller, place_call
from config import load_settings
from base.db import make_engine, make_session_factory
from hotline.services import Services
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore
from orders.ticket_numbers import TicketNumberAllocator
from orders.writer import TicketWriter
from tests.conftest import REDIS_URL


class Hotline:
    def __init__(self, services, server):
        self.services = services
        self.server = server

    def call(self, **kwargs):
        result = place_call(Caller(**kwargs), *self.server.address, timeout=20)
        assert self.server.wait_idle(20)  # the handler saves the ticket after handing the call back
        assert self.services.writer.wait_idle(20)  # on the writer's threads
        ticket = self.services.tickets.get(result.ticket) if result.ticket else None
        return result, ticket


def _start(settings, engine, session_factory, redis_conn):
    services = Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
    server = build_server(services)
    server.start()
    return services, server


@pytest.fixture
def settings(database_url, tmp_path):
    # agi_max_busy: calls placed at once here must all be served, whatever their timing (shedding is
    # tests/test_agi_abuse.py's).
    return load_settings(environ={}, data_dir=tmp_path, database_url=database_url, redis_url=REDIS_URL,
                         rq_queue="test-" + uuid.uuid4().hex[:8], agi_port=0, agi_read_timeout=10,
                         sounds_dir=tmp_path / "sounds", agi_max_busy=64)


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
    """No ticket lost, none doubled: both revisions go to the spool and are applied once it replays."""
    down_engine = make_engine("postgresql://postgres@127.0.0.1:1/none", pool_timeout=1, connect_timeout=1)
    # No linger: each revision is saved (here: spooled) on its own, as when the caller spends a while in
    # the menu, rather than the newer replacing the older while it waits in memory.
    services = Services(settings=dataclasses.replace(settings, ticket_save_linger=0), engine=down_engine,
                        session_factory=make_session_factory(down_engine), _redis=redis_conn)
    # Ticket numbers come from Redis; its seed would need the (down) database, so seed it now.
    TicketNumberAllocator(redis_conn, session_factory).next(datetime.now(timezone.utc))
    server = build_server(services)
    server.start()
    try:
        result = place_call(Caller(number="13800138000", keys=["1", "2"]), *server.address)
        assert server.wait_idle(20)
    finally:
        server.shutdown(grace=5)
        services.writer.close()
    assert _vars(result)["HOTLINE_QUEUE"] == "urgent-zh"  # the caller was not held up by the outage
    number = result.ticket
    store = TicketStore(session_factory)
    assert store.get(number) is None  # not written yet
    down_engine.dispose()

    spool_path = services.writer.spool.path
    spooled = [line for line in spool_path.read_text().splitlines() if line.strip()]
    assert len(spooled) == 2  # revision 1 (opened) and 2 (queued)
    # The database is back: a writer over it (as the process's replayer is) writes both, once.
    back = TicketWriter(store, None, spool_path)
    assert back.replay_spool() == (2, 0)
    ticket = store.get(number)
    assert ticket is not None and ticket.status == "queued" and ticket.urgency == "high"
    # A second delivery of either revision, in any order, changes nothing.
    for line in reversed(spooled):
        assert store.save(TicketSnapshot.from_dict(json.loads(line))) is False
    assert store.get(number).status == "queued"
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
    # A process per call takes one number, not a block it would leave unused: the next call's is the next.
    again, status, stderr = place_classic_call([sys.executable, "-m", "hotline.classic_agi"],
                                               Caller(number="13500135001", keys=["1", "1"]), env)
    assert status == 0, stderr
    assert int(again.variables["HOTLINE_TICKET"].strip('"')) == int(v["HOTLINE_TICKET"]) + 1


def test_a_session_past_its_time_budget_still_queues_the_caller(settings, engine, session_factory, redis_conn):
    """The budget ends the menu, not the call: the caller goes to the default queue and the ticket says so."""
    services, server = _start(dataclasses.replace(settings, agi_session_timeout=0.001), engine, session_factory,
                              redis_conn)
    try:
        result = place_call(Caller(keys=["1", "2"]), *server.address)
        assert server.wait_idle(20) and services.writer.wait_idle(20)
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


# --- a hang-up at any command: routed, or abandoned with the caller's choices -----------------------------

URGENT_EN_COMMANDS = 11  # a full English urgent call (keys 2, 2) sends this many commands


def _first(transcript, predicate):
    return next((i for i, line in enumerate(transcript) if predicate(line)), None)


@pytest.mark.parametrize("hangup_at", range(1, URGENT_EN_COMMANDS + 2))
def test_a_hangup_at_any_command_of_an_urgent_call_is_routed_or_abandoned_with_the_choices_made(hotline, hangup_at):
    result, ticket = hotline.call(number="13800138000", keys=["2", "2"], hangup_at=hangup_at)
    if hangup_at > URGENT_EN_COMMANDS:
        assert not result.caller_hung_up and result.commands == URGENT_EN_COMMANDS  # the range covers every command
    assert ticket is not None and result.ticket == ticket.number
    assert ticket.call.outcome != "fallback"
    transcript = result.transcript
    queue_set = _first(transcript, lambda line: line.startswith(">>> SET VARIABLE HOTLINE_QUEUE "))
    hangup = _first(transcript, lambda line: line == "<<< HANGUP")
    if queue_set is not None and (hangup is None or hangup > queue_set):
        assert (_vars(result)["HOTLINE_QUEUE"], _vars(result)["HOTLINE_PRIORITY"]) == ("hotline-en", "10")
        assert (ticket.status, ticket.call.outcome, ticket.call.ended_at) == ("queued", "routed", None)
        assert (ticket.language, ticket.category, ticket.urgency) == ("en", "urgent", "high")
        assert ticket.ivr_path == "language:2>main:2"
        return
    # The caller left before the queue was set: whatever the dialplan holds, this is no routed call.
    assert (ticket.status, ticket.call.outcome) == ("abandoned_in_ivr", "abandoned_in_ivr")
    assert ticket.call.ended_at is not None
    keys_heard = sum(1 for i, line in enumerate(transcript[:-1])
                     if line.startswith(">>> GET DATA ") and transcript[i + 1] == "<<< 200 result=2")
    expected = [("zh-CN", None, "normal", "language:hangup"),
                ("en", None, "normal", "language:2>main:hangup"),
                ("en", "urgent", "high", "language:2>main:2>urgent:hangup")][keys_heard]
    assert (ticket.language, ticket.category, ticket.urgency, ticket.ivr_path) == expected


def test_a_hangup_without_any_hangup_line_agisighup_no_is_still_abandoned(hotline):
    result, ticket = hotline.call(keys=["2", "2"], hangup_at=5, agisighup=False)
    assert "<<< HANGUP" not in result.transcript
    assert "HOTLINE_QUEUE" not in result.variables
    assert (ticket.status, ticket.ivr_path) == ("abandoned_in_ivr", "language:hangup")


# --- a prompt missing from Asterisk's sounds -------------------------------------------------------------


def _missing_prompt_errors(caplog):
    return [r for r in caplog.records if getattr(r, "event", None) == "agi.prompt_missing"]


def test_a_prompt_missing_from_asterisk_sends_the_caller_to_an_agent_and_tells_the_operator_once(hotline, caplog):
    ivr_driver.MISSING_SOUNDS.clear()
    caplog.set_level(logging.INFO)
    result, ticket = hotline.call(keys=["2", "2"], missing_sounds=True)
    v = _vars(result)
    # The caller cannot hear the language menu: an agent, in the language of the call so far.
    assert (v["HOTLINE_QUEUE"], v["HOTLINE_PRIORITY"], v["HOTLINE_LANG"]) == ("hotline-zh", "1", "zh-CN")
    assert not result.caller_hung_up
    assert ">>> CHANNEL STATUS" in result.transcript and "<<< 200 result=6" in result.transcript
    assert (ticket.status, ticket.call.outcome, ticket.call.ended_at) == ("queued", "routed", None)
    assert (ticket.language, ticket.category, ticket.ivr_path) == ("zh-CN", "general", "language:prompt-missing")
    errors = _missing_prompt_errors(caplog)
    assert [r.levelno for r in errors] == [logging.ERROR] * len(errors)
    assert sorted(r.sound for r in errors) == ["zh/hotline/choose-language", "zh/hotline/connecting"]
    assert any("zh/hotline/choose-language" in r.getMessage() for r in errors)

    hotline.call(keys=["1"], missing_sounds=True)
    hotline.call(keys=["1"], missing_sounds=True)
    assert len(_missing_prompt_errors(caplog)) == 2  # once per prompt and process, not once per call


def test_a_hangup_during_a_missing_prompt_is_still_a_hangup(hotline):
    result, ticket = hotline.call(keys=["2", "2"], missing_sounds=True, hangup_at=5)
    assert result.transcript[result.transcript.index(">>> GET DATA hotline/choose-language 5000 1") + 1:][:2] == [
        "<<< 200 result=-1", "<<< HANGUP"]
    assert "HOTLINE_QUEUE" not in result.variables
    assert (ticket.status, ticket.ivr_path) == ("abandoned_in_ivr", "language:hangup")


# --- odd agi_* values ------------------------------------------------------------------------------------

_uniqueid_serial = itertools.count(1)
odd_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=300)
ODD_KEYS = ["agi_callerid", "agi_calleridname", "agi_callingpres", "agi_channel", "agi_uniqueid", "agi_dnid",
            "agi_rdnis", "agi_language", "agi_type", "agi_context", "agi_extension", "agi_priority",
            "agi_accountcode", "agi_threadid"]


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(st.sampled_from(ODD_KEYS), odd_text))
@example(env={"agi_dnid": "1" * 70})
@example(env={"agi_callerid": "138\x0000138000", "agi_calleridname": "Citizen\x00\x07\x1b[2J",
              "agi_channel": "PJSIP/trunk\x00-0001\x7f", "agi_uniqueid": "1795845643.41\x00"})
@example(env={"agi_channel": "PJSIP/" + "x" * 500, "agi_uniqueid": "9" * 200, "agi_callerid": "1" * 200,
              "agi_callingpres": "\x00"})
@example(env={"agi_uniqueid": "\x01\x02"})  # nothing left of it: a ticket without a call record
def test_odd_agi_values_still_give_the_call_its_ticket_and_its_queue(hotline, env):
    raw = env.get("agi_uniqueid")
    if raw is None or _without_controls(raw):
        # Asterisk's uniqueids are unique; keep them so, or the store rightly refuses the second call.
        env = {**env, "agi_uniqueid": f"{next(_uniqueid_serial)}.{uuid.uuid4().hex[:8]}.{raw or ''}"}
    result, ticket = hotline.call(keys=["1", "1"], env=env)
    v = _vars(result)
    assert v["HOTLINE_QUEUE"] == "hotline-zh" and v["HOTLINE_TICKET"].isdigit()
    assert ticket is not None and ticket.status == "queued" and ticket.category == "general"
    assert "\x00" not in ticket.caller_raw
    assert ticket.confidential == presentation_restricted(env.get("agi_callingpres"))
    if _without_controls(env["agi_uniqueid"]):
        call = ticket.call
        assert call is not None and call.outcome == "routed"
        for value, limit in ((call.uniqueid, 64), (call.channel, 128), (call.dialed_number, 64)):
            assert value is None or (value == _without_controls(value) and len(value) <= limit)
    else:  # nothing of the uniqueid is left: a ticket without a call record, still queued
        assert ticket.call is None


def _without_controls(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc")


# --- a caller who withheld their number ------------------------------------------------------------------


@pytest.mark.parametrize("callingpres, confidential", [
    (32, True), (33, True), (35, True),  # presentation restricted: the caller asked to hide the number
    (0, False), (1, False), (3, False),  # presentation allowed
    (67, False),  # "unavailable": the network has no number, the caller asked for nothing
])
def test_a_caller_who_withheld_their_number_gets_a_confidential_ticket(hotline, callingpres, confidential):
    result, ticket = hotline.call(number="13800138000", callingpres=callingpres, keys=["1", "1"])
    assert _vars(result)["HOTLINE_QUEUE"] == "hotline-zh"
    assert ticket.confidential is confidential
    assert ticket.caller_e164 == "+8613800138000"  # kept for the hotline; departments never see it


@pytest.mark.parametrize("value, restricted", [
    ("32", True), ("35", True), (" 33 ", True), ("0", False), ("64", False), ("67", False), ("96", False),
    ("", False), ("unknown", False), ("0x20", False), ("-1", False), (None, False), ("3" * 80, False),
])
def test_presentation_restricted_reads_any_callingpres(value, restricted):
    assert presentation_restricted(value) is restricted


# --- the fallback hands the caller on before any storage wait --------------------------------------------


class BlockingWriter:
    """A ticket writer whose saves (on threads of its own, like the real one's) wait until the test lets them go."""

    def __init__(self, writer):
        self.writer = writer
        self.go = threading.Event()
        self.saved: list[int] = []
        self.threads: list[threading.Thread] = []

    def save_later(self, snapshot):
        thread = threading.Thread(target=self._save, args=(snapshot,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _save(self, snapshot):
        assert self.go.wait(30), "the test never let the save go"
        self.writer.save(snapshot)
        self.saved.append(snapshot.revision)

    def join(self):
        for thread in self.threads:
            thread.join(30)


def test_the_fallback_hands_the_caller_on_before_waiting_for_the_ticket_save(hotline, monkeypatch):
    handler = hotline.server.registry.get("incoming")
    writer = BlockingWriter(handler.writer)
    monkeypatch.setattr(handler, "writer", writer)

    def broken(number):
        raise RuntimeError("a bug")
    monkeypatch.setattr(handler, "_status_of", broken)
    try:
        result = place_call(Caller(keys=["1", "4", "2026112800001#"]), *hotline.server.address, timeout=10)
        # The call is over for the backend while no save has finished (each is still blocked).
        assert writer.saved == []
        v = _vars(result)
        assert (v["HOTLINE_QUEUE"], v["HOTLINE_PRIORITY"]) == ("hotline-zh", "1") and v["HOTLINE_TICKET"].isdigit()
        assert result.transcript[-2:] == ["# server closed the session", "<<< HANGUP"]
    finally:
        writer.go.set()
    assert hotline.server.wait_idle(20)
    writer.join()
    assert sorted(writer.saved) == [1, 2]
    ticket = hotline.services.tickets.get(result.ticket)
    assert (ticket.status, ticket.call.outcome) == ("queued", "fallback")
    assert (ticket.language, ticket.ivr_path) == ("zh-CN", "language:1>main:4>status:number")


def test_a_caller_who_called_within_a_day_is_queued_one_priority_higher(settings, engine, session_factory, redis_conn):
    services, server = _start(settings, engine, session_factory, redis_conn)
    try:
        first = place_call(Caller(number="13600136000", keys=["1", "1"]), *server.address)
        assert server.wait_idle(20) and services.writer.wait_idle(20)  # the first ticket is stored
        again = place_call(Caller(number="13600136000", keys=["1", "1"]), *server.address)
        other = place_call(Caller(number="13600136001", keys=["1", "1"]), *server.address)
        assert server.wait_idle(20)
    finally:
        server.shutdown(grace=5)
        services.close()
    assert [_vars(r)["HOTLINE_PRIORITY"] for r in (first, again, other)] == ["1", "2", "1"]
