"""Benchmark: the deadline scan and the department ranking over a year of tickets on PostgreSQL.

Fills a schema of its own in the local PostgreSQL with a year of tickets (1,000,000 by default, made by
the server with generate_series: 99.5 % answered with no deadline running, the rest open with deadlines
spread over the next weeks, a few hundred overdue, and ~50 just past their deadline), then times, in the
same run, medians of several rounds:

* the overdue scan (Casework.scan_deadlines' query: due_at <= now and not yet marked, on the due_at index),
  against the same query with index scans switched off (what it costs without the index) and against a
  naive scan without the precomputed due_at (deadlines worked out from dispatched_at on every row);
* the overdue ranking of departments (Casework.overdue_ranking) over the last 30 days and over the year;
* ticket moves per second through the HTTP API (register, dispatch, accept, reply, close on fresh
  tickets, each with If-Match), over Flask's WSGI client in this process (--moves tickets, 0: skip).

    .venv/bin/python bench/tickets.py [--tickets 1000000] [--rounds 7] [--database-url postgresql://...]

Goal: the overdue scan under 50 ms at a million tickets. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

import orders.models  # noqa: E402,F401
import web.tokens  # noqa: E402,F401
from base.db import Base, make_engine, make_session_factory  # noqa: E402
from orders.cases import Casework  # noqa: E402
from orders.working_days import WorkingCalendar  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEPARTMENTS = 40

# One statement, run by the server: a year of tickets ending at :now.
FILL = """
INSERT INTO tickets (number, caller_raw, caller_e164, caller_kind, channel, language, ivr_path, category, urgency,
                     confidential, status, department, created_at, updated_at, revision, version, dispatched_at,
                     due_at, due_kind, warn_at, overdue_since)
SELECT lpad(i::text, 13, '0'), '13800000000', '+8613800000000', 'mobile', 'phone', 'zh-CN', '', 'water',
       CASE WHEN i % 50 = 0 THEN 'high' ELSE 'normal' END, false,
       CASE WHEN i % 200 = 0 THEN 'accepted' ELSE 'closed' END,
       'dept-' || ((i / 7) % :departments), created, created, 2, 3, created + interval '5 minutes',
       CASE WHEN i % 200 = 0 THEN :now + ((i % 1000) || ' hours')::interval
            WHEN i % 20000 = 7 THEN :now - interval '1 minute' END,
       CASE WHEN i % 200 = 0 OR i % 20000 = 7 THEN 'answer' END,
       NULL,
       CASE WHEN i % 2500 = 0 THEN created + interval '10 days' END
FROM (SELECT i, :now - (i * (interval '1 year' / :tickets)) AS created FROM generate_series(1, :tickets) AS i) AS t
"""

# Each ticket's one dispatch, to its lead department (the ranking counts dispatches).
FILL_ASSIGNMENTS = """
INSERT INTO ticket_assignments (ticket_id, department, lead, assigned_at, ended_at, overdue_since)
SELECT id, department, true, dispatched_at, NULL, overdue_since FROM tickets
"""

# A scan without the precomputed deadline: every open dispatched ticket's deadline worked out on the row
# (calendar days stand in for working days, which SQL cannot count without the calendar).
NAIVE_SCAN = """
SELECT id, number, department FROM tickets
WHERE status NOT IN ('closed', 'merged', 'archived') AND dispatched_at IS NOT NULL AND overdue_since IS NULL
  AND CASE WHEN urgency = 'high' AND status = 'dispatched' THEN dispatched_at + interval '30 minutes'
           ELSE dispatched_at + interval '14 days' END <= :now
LIMIT 1000
"""


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--database-url", default=DEFAULT_URL)
    ap.add_argument("--moves", type=int, default=200, help="tickets taken through five moves over the API")
    args = ap.parse_args()
    if not 1000 <= args.tickets <= 5_000_000:
        raise SystemExit("--tickets must be from 1,000 to 5,000,000")

    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = make_engine(args.database_url, statement_timeout=None)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.database_url else "?"
    engine = make_engine(f"{args.database_url}{sep}options=-csearch_path%3D{schema}", statement_timeout=None)
    try:
        Base.metadata.create_all(engine)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(FILL), {"now": now, "tickets": args.tickets, "departments": DEPARTMENTS})
            conn.execute(text(FILL_ASSIGNMENTS))
            conn.execute(text("ANALYZE tickets"))
            conn.execute(text("ANALYZE ticket_assignments"))
        print(f"filled {args.tickets:,} tickets in {time.perf_counter() - started:.1f} s")

        work = Casework(make_session_factory(engine), WorkingCalendar(), clock=lambda: now)
        session_factory = make_session_factory(engine)

        def scan_read_only(indexes: bool = True) -> int:
            with session_factory() as session:
                if not indexes:
                    session.execute(text("SET LOCAL enable_indexscan = off"))
                    session.execute(text("SET LOCAL enable_bitmapscan = off"))
                found = session.execute(text("SELECT id, number, department FROM tickets WHERE due_at <= :now "
                                             "AND overdue_since IS NULL LIMIT 1000"), {"now": now}).all()
                session.rollback()
                return len(found)

        def naive() -> int:
            with session_factory() as session:
                return len(session.execute(text(NAIVE_SCAN), {"now": now}).all())

        due = scan_read_only()
        print(f"overdue scan finds {due} ticket(s) just past their deadline")
        ours = timed(scan_read_only, args.rounds)
        no_index = timed(lambda: scan_read_only(False), args.rounds)
        naive_times = timed(naive, args.rounds)
        print(f"overdue scan (due_at index):          {ms(ours)}  (goal: < 50 ms)")
        print(f"the same query, index scans off:      {ms(no_index)}  "
              f"({statistics.median(no_index) / statistics.median(ours):.0f}x slower)")
        print(f"naive scan, deadlines worked per row: {ms(naive_times)}  "
              f"({statistics.median(naive_times) / statistics.median(ours):.0f}x slower)")

        marked = timed(lambda: work.scan_deadlines(now), 1)
        print(f"scan_deadlines marking them overdue (with audit events): {marked[0] * 1000:.1f} ms; "
              f"the next scan: {ms(timed(lambda: work.scan_deadlines(now), args.rounds))}")

        for label, since in (("last 30 days", now - timedelta(days=30)), ("the year", now - timedelta(days=366))):
            rows = work.overdue_ranking(since, now)
            ranked = timed(lambda: work.overdue_ranking(since, now), args.rounds)
            print(f"department ranking over {label}: {ms(ranked)} ({len(rows)} departments; worst "
                  f"{rows[0].department if rows else '-'})")
            naive_rank = timed(lambda: naive_ranking(session_factory, since, now), args.rounds)
            print(f"  naive, one pass over the tickets without the indexes: {ms(naive_rank)} "
                  f"({statistics.median(naive_rank) / statistics.median(ranked):.1f}x slower)")
        if args.moves:
            moves_through_the_api(f"{args.database_url}{sep}options=-csearch_path%3D{schema}", min(args.moves, 5000))
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def naive_ranking(session_factory, since: datetime, until: datetime) -> int:
    """The ranking as one grouped pass over the tickets, with index scans off: what it costs without the
    assignments' indexes (and without lateness kept per dispatch, which this cannot see)."""
    with session_factory() as session:
        session.execute(text("SET LOCAL enable_indexscan = off"))
        session.execute(text("SET LOCAL enable_bitmapscan = off"))
        rows = session.execute(text(
            "SELECT department, sum(CASE WHEN overdue_since IS NOT NULL AND status IN ('dispatched', 'accepted', "
            "'in_progress') THEN 1 ELSE 0 END), sum(CASE WHEN overdue_since >= :since AND overdue_since < :until "
            "THEN 1 ELSE 0 END), sum(CASE WHEN dispatched_at >= :since AND dispatched_at < :until THEN 1 ELSE 0 END) "
            "FROM tickets WHERE department IS NOT NULL GROUP BY department"), {"since": since, "until": until}).all()
        session.rollback()
        return len(rows)


def moves_through_the_api(database_url: str, tickets: int) -> None:
    """register, dispatch, accept, reply, close on ``tickets`` fresh tickets over the API; prints moves/s."""
    import dataclasses
    import tempfile

    from config import load_settings
    from hotline.services import build_services
    from orders.snapshot import TicketSnapshot
    from web.app import create_app
    from web.auth import create_token

    services = build_services(load_settings(environ={}, data_dir=Path(tempfile.mkdtemp(prefix="hotline-bench-")),
                                            database_url=database_url))
    try:
        services.departments.create("bench-water", "供水", "Water")
        agent = create_token(services.session_factory, "bench-agent", "agent")
        water = create_token(services.session_factory, "bench-water", "department", "bench-water")
        created = datetime.now(timezone.utc)
        numbers = []
        for i in range(tickets):
            snap = TicketSnapshot(number=f"9{i:012d}", revision=1, caller_raw="13800138000",
                                  caller_e164="+8613800138000", caller_kind="mobile", created_at=created)
            services.tickets.save(dataclasses.replace(snap, status="queued"))
            numbers.append(snap.number)
        client = create_app(services, token_cache_ttl=60).test_client()
        steps = [("register", agent, {"category": "water", "summary": "No water"}),
                 ("dispatch", agent, {"lead": "bench-water"}), ("accept", water, {}),
                 ("reply", water, {"note": "Repaired"}), ("close", agent, {})]
        started, done = time.perf_counter(), 0
        for number in numbers:
            for version, (move, token, body) in enumerate(steps, 1):
                response = client.post(f"/api/tickets/{number}/moves/{move}", json=body,
                                       headers={"Authorization": f"Bearer {token}", "If-Match": f'"{version}"'})
                if response.status_code != 200:
                    raise SystemExit(f"{move} on {number}: {response.status_code} {response.get_data(as_text=True)}")
                done += 1
        elapsed = time.perf_counter() - started
        print(f"moves through the API: {done} in {elapsed:.1f} s = {done / elapsed:.0f} moves/s "
              f"(one client, one thread, each move a transaction with its audit event)")
    finally:
        services.close()


if __name__ == "__main__":
    main()
