"""Receipts written off the call path (virtual_numbers.receipts): each call leaves one, once, in the database;
a database that is down, a full queue, a bad row, a process that exits or is killed lose nothing but what
the module says; the outgoing leg finds its target through the call's note before the receipt is written.

The writers here are built with an interval of an hour: their thread never writes on its own, so every
write happens where the test says (flush, close, replay), and nothing depends on timing."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from base.db import make_engine, make_session_factory
from tests.orders_fixtures import TcpProxy, postgres_only, unreachable_database_url
from tests.test_virtual_numbers_broker import (  # noqa: F401
    A,
    C,
    E,
    STRANGER,
    W1,
    W2,
    X1,
    clock,
    make_broker,
    number_forms,
    world,
)
from virtual_numbers.models import ResolutionRecord
from virtual_numbers.receipts import ReceiptWriter, merged, write_receipts

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"interval": 3600.0, "batch": 10_000}  # the thread stays asleep: the test decides every write


def spool_path(tmp_path) -> Path:
    return tmp_path / "spool" / "virtual-receipts.jsonl"


_MADE: list = []


def batched(session_factory, redis_conn, redis_prefix, clock, tmp_path, **options):  # noqa: F811
    broker = make_broker(session_factory, redis_conn, redis_prefix, clock, receipt_spool=spool_path(tmp_path),
                         receipt_options={**QUIET, **options})
    _MADE.append(broker)
    return broker


@pytest.fixture(autouse=True)
def _close_writers(engine):
    """Writers this test made are closed before its database goes (not at the interpreter's exit)."""
    yield
    while _MADE:
        _MADE.pop().receipt_writer.close(timeout=1.0)


def rows_in(session_factory) -> dict[str, tuple]:
    with session_factory() as session:
        return {r.call_id: (r.outcome, r.binding_id, r.caller_masked, r.callee_masked, r.started_at)
                for r in session.scalars(select(ResolutionRecord))}


def count(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(ResolutionRecord))


def row(call_id: str, outcome: str = "unknown_pair", started_at: datetime | None = None, binding_id=None) -> dict:
    return {"call_id": call_id, "binding_id": binding_id, "virtual_number": X1, "caller_masked": "+86136****0009",
            "callee_masked": None, "direction": None, "outcome": outcome,
            "started_at": started_at or datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)}


# -- off the call path, once per call ---------------------------------------------------------------------


def test_receipts_wait_off_the_call_path_and_each_call_leaves_one(world, redis_conn, redis_prefix, clock,  # noqa: F811
                                                                   tmp_path):
    broker = batched(world, redis_conn, redis_prefix, clock, tmp_path)
    broker.add_number(X1)
    view = broker.bind("2026120100001", A, "water")
    broker.bind("2026120100002", C, "water")  # water holds X1: these two get extensions on it
    broker.bind("2026120100003", E, "water")
    ext = broker.list_bindings(ticket_number="2026120100002")[0]
    assert broker.resolve(A, X1, call_id="a").target == W1
    assert broker.resolve(A, X1, call_id="a").target == W1  # a retried request: still one receipt
    assert broker.resolve(STRANGER, X1, call_id="s").reason == "unknown_pair"
    broker.end_for_ticket("2026120100001")  # water's pair binding on X1 ends: it must key an extension now
    assert broker.resolve(W1, X1, call_id="k").reason == "extension_required"
    assert broker.resolve(W1, X1, extension=ext.extension, call_id="k").target == C
    assert count(world) == 0 and broker.receipt_writer.pending() == 5  # nothing written on the call path
    receipts = {r.call_id: r for r in broker.receipts()}  # this process's queued receipts are written first
    assert broker.receipt_writer.pending() == 0
    assert {call: r.outcome for call, r in receipts.items()} == {"a": "connected", "s": "unknown_pair",
                                                                 "k": "connected"}
    assert (receipts["a"].binding_id, receipts["a"].caller_masked, receipts["a"].callee_masked) == (
        view.id, "+86138****8000", "+86755****0001")
    assert receipts["k"].binding_id == ext.id
    done = broker.record_call("a", answered_at=clock.now, ended_at=clock.now + timedelta(seconds=9),
                              hangup_by="caller")
    assert (done.seconds, done.hangup_by) == (9, "caller")
    broker.close()
    assert count(world) == 3


@pytest.mark.parametrize("split", [None, 1], ids=["one batch", "two batches"])
@pytest.mark.parametrize("order", ["prompt first", "final first"])
def test_an_extension_prompt_is_replaced_whatever_the_batches(session_factory, split, order):
    first = row("k", "extension_required", datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    final = row("k", "connected", datetime(2026, 12, 1, 2, 0, 5, tzinfo=timezone.utc), binding_id=None)
    retry = row("k", "unknown_extension", datetime(2026, 12, 1, 2, 0, 9, tzinfo=timezone.utc))
    rows = [first, final, retry] if order == "prompt first" else [final, first, retry]
    batches = [rows] if split is None else [rows[:split], rows[split:]]
    for batch in batches:
        write_receipts(session_factory, merged(batch))
    ((outcome, *_), ) = rows_in(session_factory).values()
    assert outcome == "connected"  # the final answer, never the prompt, never a later retry
    assert merged([first, final])[0]["started_at"] == first["started_at"]  # as the database keeps it


# -- nothing lost --------------------------------------------------------------------------------------------


@postgres_only
def test_receipts_queued_while_the_database_is_down_arrive_later(world, database_url, redis_conn,  # noqa: F811
                                                                 redis_prefix, clock, tmp_path):
    broker = batched(world, redis_conn, redis_prefix, clock, tmp_path)
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    assert broker.resolve(W1, X1).target == A and broker.resolve(A, X1).target == W1
    assert broker.resolve(STRANGER, X1).refused  # all three cached now
    broker.receipts()
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    engine = make_engine(proxy.url_for(database_url), connect_timeout=1)
    try:
        cut = batched(make_session_factory(engine), redis_conn, redis_prefix, clock, tmp_path)
        assert cut.resolve(W1, X1, call_id="during-1").target == A  # warm the proxied pool
        cut.receipt_writer.flush()
        proxy.stop()  # the database is down
        answers = [cut.resolve(W1, X1, call_id="during-2"), cut.resolve(A, X1, call_id="during-3"),
                   cut.resolve(STRANGER, X1, call_id="during-4")]
        assert [a.refused for a in answers] == [False, False, True]  # Redis answers, refusals included
        assert cut.receipt_writer.flush() == 3  # written? no: spooled
        assert cut.receipt_writer.spool.pending() == 1 and cut.receipt_writer.breaker.is_open
        cut.resolve(W1, X1, call_id="during-5")
        cut.receipt_writer.flush()  # the breaker keeps the database out: spooled at once
        assert cut.receipt_writer.spool.pending() == 2
        assert cut.replay_receipts() == (0, 2)  # still down: the spool is left as it is
        proxy.start()  # back
        assert cut.replay_receipts() == (2, 0)
        assert not cut.receipt_writer.breaker.is_open
        assert {f"during-{i}" for i in range(1, 6)} <= set(rows_in(world))
        assert rows_in(world)["during-4"][0] == "unknown_pair"
        assert count(world) == 3 + 5
    finally:
        engine.dispose()
        proxy.stop()


def test_a_full_queue_spools_at_once(world, redis_conn, redis_prefix, clock, tmp_path):  # noqa: F811
    broker = batched(world, redis_conn, redis_prefix, clock, tmp_path, queue_size=2)
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    for i in range(4):
        broker.resolve(W1, X1, call_id=f"c{i}")
    assert broker.receipt_writer.pending() == 2 and broker.receipt_writer.spool.pending() == 2
    broker.receipt_writer.flush()
    assert broker.replay_receipts() == (2, 0)
    assert set(rows_in(world)) == {"c0", "c1", "c2", "c3"}


def test_a_receipt_the_database_refuses_is_set_aside_not_dropped(session_factory, tmp_path):
    writer = ReceiptWriter(session_factory, spool_path(tmp_path), **QUIET)
    writer.record(row("good-1"))
    writer.record(row("bad", binding_id=987654))  # no such binding: the database refuses this one forever
    writer.record(row("good-2"))
    writer.flush()
    assert set(rows_in(session_factory)) == {"good-1", "good-2"}
    (line,) = writer.rejected.path.read_text().splitlines()
    assert json.loads(line)["receipts"][0]["call_id"] == "bad"
    assert writer.spool.pending() == 0
    writer.close()


def test_a_spool_line_that_is_not_receipts_is_set_aside(session_factory, tmp_path):
    writer = ReceiptWriter(session_factory, spool_path(tmp_path), **QUIET)
    writer.spool.append({"receipts": [json.loads(json.dumps(row("s1"), default=str))]})
    writer.spool.append({"something": "else"})
    with open(writer.spool.path, "a") as f:
        f.write("not json at all\n")
    assert writer.replay_spool() == (3, 0)
    assert set(rows_in(session_factory)) == {"s1"}
    assert len(writer.rejected.path.read_text().splitlines()) == 2


def _child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


_CHILD_HEAD = """
    import os, signal, sys
    from datetime import datetime, timezone
    from base.db import make_engine, make_session_factory
    from virtual_numbers.receipts import ReceiptWriter
    def row(call_id):
        return {"call_id": call_id, "binding_id": None, "virtual_number": "+8675526660001",
                "caller_masked": "+86136****0009", "callee_masked": None, "direction": None,
                "outcome": "unknown_pair", "started_at": datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)}
"""


def test_a_killed_process_loses_only_what_it_had_not_spooled(database_url, session_factory, tmp_path):
    spool = spool_path(tmp_path)
    down = unreachable_database_url(database_url, tmp_path)
    done = _child(_CHILD_HEAD + f"""
    writer = ReceiptWriter(make_session_factory(make_engine({down!r}, connect_timeout=1)), {str(spool)!r},
                           interval=3600, batch=10_000)
    for i in range(3):
        writer.record(row(f"spooled-{{i}}"))
    writer.flush()  # the database is unreachable: spooled (fsync'd)
    for i in range(2):
        writer.record(row(f"queued-{{i}}"))  # still in memory when the process is killed
    print("spooled", writer.spool.pending(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert "spooled 1" in done.stdout and done.returncode == -9, done.stderr
    writer = ReceiptWriter(session_factory, spool, **QUIET)  # any process of the host replays the spool
    assert writer.replay_spool() == (1, 0)
    assert set(rows_in(session_factory)) == {"spooled-0", "spooled-1", "spooled-2"}  # the queued two: the
    # stated loss of a killed process (at most its last interval's receipts)


def test_a_process_that_exits_writes_what_it_had_queued(database_url, session_factory, tmp_path):
    if database_url.startswith("postgresql"):
        url = session_factory.kw["bind"].url.render_as_string(hide_password=False)
    else:
        url = database_url
    done = _child(_CHILD_HEAD + f"""
    writer = ReceiptWriter(make_session_factory(make_engine({url!r})), {str(spool_path(tmp_path))!r},
                           interval=3600, batch=10_000)
    for i in range(3):
        writer.record(row(f"exit-{{i}}"))
    assert writer.pending() == 3
    sys.exit(0)  # the interpreter's exit closes the writer
    """)
    assert done.returncode == 0, done.stderr
    assert set(rows_in(session_factory)) == {"exit-0", "exit-1", "exit-2"}


def _forked_child(writer: ReceiptWriter, out) -> None:
    try:
        writer.record(row("child"))
        out.put(writer.flush())
    finally:
        out.close()
        out.join_thread()
        os._exit(0)


def test_a_forked_child_writes_its_own_receipts_not_its_parents(session_factory, tmp_path):
    writer = ReceiptWriter(session_factory, spool_path(tmp_path), **QUIET)
    writer.record(row("parent-1"))
    writer.record(row("parent-2"))  # queued, the thread started
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(writer, out))
    child.start()
    assert out.get(timeout=60) == 1  # its own receipt only
    child.join(timeout=30)
    assert set(rows_in(session_factory)) == {"child"}
    writer.flush()
    assert set(rows_in(session_factory)) == {"child", "parent-1", "parent-2"}
    writer.close()


def test_without_a_spool_receipts_are_written_on_the_call_path(world, redis_conn, redis_prefix, clock):  # noqa: F811
    broker = make_broker(world, redis_conn, redis_prefix, clock)
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    broker.resolve(W1, X1, call_id="now")
    assert set(rows_in(world)) == {"now"} and not broker.receipt_writer.batched


# -- the outgoing leg: the call's note, or its receipt ----------------------------------------------------


def test_the_outgoing_leg_finds_its_target_before_the_receipt_is_written(world, redis_conn, redis_prefix,  # noqa: F811
                                                                        clock, tmp_path):
    caller_leg = batched(world, redis_conn, redis_prefix, clock, tmp_path)
    caller_leg.add_number(X1)
    view = caller_leg.bind("2026120100001", A, "water")
    assert caller_leg.resolve(W1, X1, call_id="fill").target == A  # the cache holds the binding now
    assert caller_leg.resolve(W2, X1, call_id="to-citizen").target == A
    assert caller_leg.resolve(A, X1, call_id="to-department").target == W2
    assert caller_leg.resolve(STRANGER, X1, call_id="stranger").refused
    other = make_broker(world, redis_conn, redis_prefix, clock)  # another process, Asterisk's outgoing leg
    assert count(world) == 0  # the caller leg's receipts still wait in its memory
    assert other.dial_target("to-citizen") == A
    assert other.dial_target("to-department") == W2
    assert other.dial_target("stranger") is None and other.dial_target("never") is None
    clock.advance(minutes=3)
    assert other.dial_target("to-citizen") is None  # too old
    clock.advance(minutes=-3)
    other.revoke(view.id)
    assert other.dial_target("to-citizen") is None  # a revoked binding is dialled no more


def test_without_its_note_the_outgoing_leg_reads_the_receipt(world, redis_conn, redis_prefix, clock,  # noqa: F811
                                                            tmp_path):
    caller_leg = batched(world, redis_conn, redis_prefix, clock, tmp_path)
    caller_leg.add_number(X1)
    caller_leg.bind("2026120100001", A, "water")
    caller_leg.resolve(W1, X1, call_id="fill")
    assert caller_leg.resolve(W2, X1, call_id="c1").target == A
    redis_conn.delete(*redis_conn.scan_iter(redis_prefix + "*"))  # Redis lost everything
    other = make_broker(world, redis_conn, redis_prefix, clock)
    assert other.dial_target("c1") is None  # no note, no receipt yet: nothing is dialled, never a guess
    caller_leg.receipt_writer.flush()
    assert other.dial_target("c1") == A


def test_a_connected_call_without_a_note_has_its_receipt_written_at_once(world, redis_down, clock,  # noqa: F811
                                                                         tmp_path):
    caller_leg = batched(world, redis_down, "down:", clock, tmp_path, )
    caller_leg.add_number(X1)
    caller_leg.bind("2026120100001", A, "water")
    assert caller_leg.resolve(W1, X1, call_id="c1").target == A  # the database answered; no note possible
    assert caller_leg.resolve(STRANGER, X1, call_id="c2").refused  # a refusal may wait
    assert set(rows_in(world)) == {"c1"}
    assert make_broker(world, None, "none:", clock).dial_target("c1") == A


def test_spooled_receipts_hold_no_citizens_number(world, redis_conn, redis_prefix, clock, tmp_path,  # noqa: F811
                                                  database_url):
    down = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    broker = batched(world, redis_conn, redis_prefix, clock, tmp_path)
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    broker.resolve(W1, X1)
    broker.resolve(A, X1)
    broker.resolve(C, X1)  # refused: kept in Redis
    try:
        cut = batched(make_session_factory(down), redis_conn, redis_prefix, clock, tmp_path)
        cut.resolve(W1, X1)
        cut.resolve(A, X1)
        cut.resolve(C, X1)
        cut.receipt_writer.flush()
        text = cut.receipt_writer.spool.path.read_text()
    finally:
        down.dispose()
    assert text.count('"call_id"') == 3
    assert not any(form in text for number in (A, C) for form in number_forms(number))
