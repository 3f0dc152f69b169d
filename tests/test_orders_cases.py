"""Casework: moves applied with their audit trail, version checks and deadlines, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from base.vocabulary import Role, TicketStatus
from orders.cases import Actor, Casework, MoveFields
from orders.departments import DepartmentError, DepartmentStore
from orders.errors import InvalidMove, MoveNotAllowed, StaleTicket, TicketLifecycleError, TicketNotFound
from orders.lifecycle import MOVES, Move
from orders.models import TicketEvent
from orders.working_days import WorkingCalendar
from tests.orders_fixtures import T0, make_snapshot, postgres_only, store  # noqa: F401

SHANGHAI = ZoneInfo("Asia/Shanghai")
AGENT = Actor("agent-li", Role.agent)
SUPERVISOR = Actor("sup-wang", Role.supervisor)
WATER = Actor("water-desk", Role.department, "water")
POWER = Actor("power-desk", Role.department, "power")
POLICE = Actor("police-desk", Role.department, "police")
REGISTER = MoveFields(category="water", summary="No water since morning", address="Longhua Rd 1", district="longhua")


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(datetime(2026, 11, 27, 15, 0, tzinfo=SHANGHAI).astimezone(timezone.utc))  # a Friday


@pytest.fixture
def departments(session_factory):
    store_ = DepartmentStore(session_factory)
    for code, zh, en in (("water", "供水公司", "Water company"), ("power", "供电局", "Power bureau"),
                         ("police", "公安局", "Police")):
        store_.create(code, zh, en)
    store_.put_rule("water", "water", kind="help", supporting=["power"])
    store_.put_rule("water", "power", district="longhua", kind="consultation")
    return store_


@pytest.fixture
def work(session_factory, departments, clock):
    return Casework(session_factory, WorkingCalendar(), clock=clock)


def queued(store_, number="2026112800001", **changes):
    snap = make_snapshot(number, uniqueid=f"1764297000.{number}")
    store_.save(dataclasses.replace(snap.next(status="queued", **changes), updated_at=snap.created_at))
    return number


def events(work_, number):
    return [(e.move, e.from_status, e.to_status, e.actor) for e in work_.events(number)]


def test_a_case_from_the_call_to_the_archive(work, store):
    n = queued(store)
    v = work.apply(n, Move.register, AGENT, 1, REGISTER)
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water", supporting=("power",)))
    v = work.apply(n, Move.accept, WATER, v)
    v = work.apply(n, Move.progress, POWER, v, MoveFields(note="Crew on site"))
    v = work.apply(n, Move.reply, WATER, v, MoveFields(note="Pipe repaired"))
    v = work.apply(n, Move.close, AGENT, v)
    v = work.apply(n, Move.archive, SUPERVISOR, v)
    assert v == 8
    view = store.get(n)
    assert (view.status, view.version, view.department, view.supporting) == ("archived", 8, "water", ("power",))
    assert (view.category, view.summary, view.district) == ("water", "No water since morning", "longhua")
    assert view.due_at is None  # no deadline runs once it is answered
    assert events(work, n) == [
        ("register", "queued", "registered", "agent-li"), ("dispatch", "registered", "dispatched", "agent-li"),
        ("accept", "dispatched", "accepted", "water-desk"), ("progress", "accepted", "in_progress", "power-desk"),
        ("reply", "in_progress", "replied", "water-desk"), ("close", "replied", "closed", "agent-li"),
        ("archive", "closed", "archived", "sup-wang"),
    ]
    trail = work.events(n)
    assert trail[1].details["lead"] == "water" and trail[1].details["supporting"] == ["power"]
    assert trail[3].note == "Crew on site" and trail[3].actor_department == "power"


def test_returned_reassigned_reopened_and_merged(work, store):
    n, other = queued(store), queued(store, "2026112800002")
    v = work.apply(n, Move.register, AGENT, 1, REGISTER)
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="police"))
    v = work.apply(n, Move.return_, POLICE, v, MoveFields(reason="Not ours: water supply"))
    assert store.get(n).status == "returned"
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    assert store.get(n).supporting == () and store.get(n).department == "water"
    with pytest.raises(MoveNotAllowed):  # police is no longer assigned
        work.apply(n, Move.accept, POLICE, v)
    v = work.apply(n, Move.accept, WATER, v)
    v = work.apply(n, Move.reply, WATER, v, MoveFields(note="Done"))
    v = work.apply(n, Move.reopen, AGENT, v, MoveFields(reason="Citizen says still no water"))
    assert store.get(n).status == "reopened"
    work.apply(other, Move.merge, AGENT, 1, MoveFields(into=n))
    assert (store.get(other).status, store.get(other).merged_into) == ("merged", n)
    with pytest.raises(InvalidMove, match="merged"):  # no chains: merge into the surviving ticket
        work.apply(n, Move.merge, AGENT, v, MoveFields(into=other))
    with pytest.raises(InvalidMove, match="itself"):
        work.apply(n, Move.merge, AGENT, v, MoveFields(into=n))


def test_a_refused_move_changes_nothing(work, store, session_factory):
    n = queued(store)
    for move, actor, version, fields, error in (
        (Move.dispatch, AGENT, 1, MoveFields(lead="water"), TicketLifecycleError),  # not registered yet
        (Move.register, WATER, 1, REGISTER, MoveNotAllowed),
        (Move.register, AGENT, 1, MoveFields(category="water"), InvalidMove),  # no summary
        (Move.register, AGENT, 7, REGISTER, StaleTicket),
    ):
        with pytest.raises(error):
            work.apply(n, move, actor, version, fields)
    assert (store.get(n).status, store.get(n).version) == ("queued", 1)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(TicketEvent)) == 0
    with pytest.raises(TicketNotFound):
        work.apply("2026112899999", Move.register, AGENT, 1, REGISTER)
    with pytest.raises(InvalidMove, match="no active department"):
        v = work.apply(n, Move.register, AGENT, 1, REGISTER)
        work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="nobody"))


def test_a_stale_version_is_refused_with_the_current_one(work, store):
    n = queued(store)
    work.apply(n, Move.register, AGENT, 1, REGISTER)
    with pytest.raises(StaleTicket) as err:
        work.apply(n, Move.resolve, SUPERVISOR, 1, MoveFields(note="Answered"))
    assert err.value.current_version == 2


@postgres_only
def test_two_people_acting_at_once_never_lose_an_update(work, store, session_factory):
    """Both read version 1 and write; PostgreSQL's row lock makes the second see that the first won."""
    n = queued(store)
    barrier, outcomes = threading.Barrier(2), []

    def act(actor, fields, move):
        barrier.wait(10)
        try:
            outcomes.append(work.apply(n, move, actor, 1, fields))
        except StaleTicket:
            outcomes.append("stale")

    for _ in range(10):  # ten rounds of the race on fresh tickets
        outcomes.clear()
        n = queued(store, f"20261128001{_:02d}")
        threads = [threading.Thread(target=act, args=(AGENT, REGISTER, Move.register)),
                   threading.Thread(target=act, args=(SUPERVISOR, dataclasses.replace(REGISTER, summary="Other"),
                                                      Move.register))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes, key=str) == [2, "stale"]
        assert len(work.events(n)) == 1 and store.get(n).version == 2


def test_the_calls_late_snapshot_never_undoes_a_move(work, store):
    snap = make_snapshot("2026112800003", uniqueid="1764297000.00003")
    store.save(snap)  # in_ivr: the closing snapshot is still on its way
    work.apply(snap.number, Move.register, AGENT, 1, REGISTER)
    store.save(snap.next(status="queued", ivr_path="language:1>main:1", outcome="routed"))
    view = store.get(snap.number)
    assert (view.status, view.category, view.ivr_path) == ("registered", "water", "language:1>main:1")


def test_confidentiality_is_kept_once_asked(work, store):
    n = queued(store)
    v = work.apply(n, Move.register, AGENT, 1, dataclasses.replace(REGISTER, confidential=True))
    assert store.get(n).confidential
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    assert store.get(n).confidential


def test_text_is_cleaned_and_cut(work, store):
    n = queued(store)
    work.apply(n, Move.register, AGENT, 1, MoveFields(category="water", summary="a\x00b\nc" + "x" * 5000))
    summary = store.get(n).summary
    assert summary.startswith("ab\nc") and len(summary) == 4000


# -- deadlines --------------------------------------------------------------------------------------


def test_an_urgent_ticket_must_be_accepted_within_30_minutes(work, store, clock):
    n = queued(store, urgency="high")
    v = work.apply(n, Move.register, AGENT, 1, dataclasses.replace(REGISTER, district=None))
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    view = store.get(n)
    assert (view.due_kind, view.due_at) == ("accept", clock.now + timedelta(minutes=30))
    clock.now += timedelta(minutes=10)
    work.apply(n, Move.accept, WATER, v)
    view = store.get(n)  # the answer's clock runs from the dispatch: 10 working days on the catalogue's rule
    assert view.due_kind == "answer"
    assert view.due_at == datetime(2026, 12, 12, tzinfo=SHANGHAI)  # Fri 27 Nov + 10 working days: Fri 11 Dec ends


def test_the_answer_deadline_counts_working_days_of_the_catalogue_rule(work, store, clock):
    n = queued(store)
    v = work.apply(n, Move.register, AGENT, 1, REGISTER)  # longhua: its own rule, a consultation (2 days)
    work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="power"))
    assert store.get(n).due_at == datetime(2026, 12, 2, tzinfo=SHANGHAI)  # Mon 30 Nov, Tue 1 Dec
    assert work.suggest("water", "longhua").lead == "power" and work.suggest("water", "xiuying").lead == "water"
    assert work.suggest("water").supporting == ("power",) and work.suggest("unknown") is None


def test_national_day_and_its_moved_working_weekend(work, store, clock):
    clock.now = datetime(2026, 9, 30, 10, 0, tzinfo=SHANGHAI).astimezone(timezone.utc)
    n = queued(store)
    v = work.apply(n, Move.register, AGENT, 1, dataclasses.replace(REGISTER, district=None))
    work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    # Oct 1-7 are holidays, Thu 8 and Fri 9 work, Sat 10 is a moved working day, Sun 11 rests: 10 working
    # days after Wed 30 Sep are Oct 8, 9, 10, 12, 13, 14, 15, 16, 19, 20.
    assert store.get(n).due_at == datetime(2026, 10, 21, tzinfo=SHANGHAI)


def test_the_deadline_job_warns_then_marks_overdue_once_each(work, store, clock):
    n = queued(store, urgency="high")
    v = work.apply(n, Move.register, AGENT, 1, REGISTER)
    work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    assert work.scan_deadlines(clock.now + timedelta(minutes=20)) == []
    warned = work.scan_deadlines(clock.now + timedelta(minutes=25))  # 80 % of 30 minutes
    assert [(w.number, w.overdue, w.due_kind) for w in warned] == [(n, False, "accept")]
    assert work.scan_deadlines(clock.now + timedelta(minutes=26)) == []
    late = work.scan_deadlines(clock.now + timedelta(minutes=31))
    assert [(w.number, w.overdue, w.department) for w in late] == [(n, True, "water")]
    assert work.scan_deadlines(clock.now + timedelta(hours=2)) == []
    assert store.get(n).overdue_since == clock.now + timedelta(minutes=30)
    assert [e[0] for e in events(work, n)][-2:] == ["warned", "overdue"]
    ranking = work.overdue_ranking(clock.now - timedelta(days=1), clock.now + timedelta(days=1))
    assert [(r.department, r.overdue_open, r.overdue_total, r.dispatched) for r in ranking] == [("water", 1, 1, 1)]


def test_a_ticket_answered_in_time_is_never_overdue(work, store, clock):
    n = queued(store)
    v = work.apply(n, Move.register, AGENT, 1, REGISTER)
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    v = work.apply(n, Move.accept, WATER, v)
    work.apply(n, Move.reply, WATER, v, MoveFields(note="Done"))
    assert work.scan_deadlines(clock.now + timedelta(days=365)) == []
    assert work.overdue_ranking(clock.now - timedelta(days=1)) == []


# -- any sequence of moves ---------------------------------------------------------------------------

ACTORS = [AGENT, SUPERVISOR, WATER, POWER, POLICE]
FIELDS = MoveFields(category="water", summary="s", lead="water", supporting=("power",), reason="r", note="n")
_EXAMPLES = itertools.count(1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(list(Move)), st.sampled_from(ACTORS), st.booleans()),
                      max_size=14))
def test_any_sequence_of_moves_keeps_the_ticket_and_its_trail_consistent(work, store, steps):
    example = next(_EXAMPLES)
    n, duplicate_of = queued(store, f"202611287{example:05d}"), queued(store, f"202611286{example:05d}")
    fields = dataclasses.replace(FIELDS, into=duplicate_of)
    status, version, trail = TicketStatus.queued, store.get(n).version, len(work.events(n))
    lead = None
    for move, actor, stale in steps:
        rule = MOVES[move]
        allowed = (actor.role in rule.roles and status in rule.sources
                   and (actor.role is not Role.department
                        or actor.department in ({lead} if rule.by == "lead" else {lead, "power" if lead else None})))
        try:
            version = work.apply(n, move, actor, version - 1 if stale else version, fields)
        except (MoveNotAllowed, TicketLifecycleError, StaleTicket, InvalidMove):
            assert not allowed or stale
        else:
            assert allowed and not stale
            status, trail = rule.target, trail + 1
            lead = "water" if move is Move.dispatch else lead
        view = store.get(n)
        assert (view.status, view.version) == (status.value, version)
        assert len(work.events(n)) == trail


def test_a_late_dispatch_counts_for_its_department_after_the_ticket_moves_on(work, store, clock):
    n = queued(store, urgency="high")
    v = work.apply(n, Move.register, AGENT, 1, dataclasses.replace(REGISTER, district=None))
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="police"))
    assert [w.department for w in work.scan_deadlines(clock.now + timedelta(minutes=31)) if w.overdue] == ["police"]
    clock.now += timedelta(minutes=40)
    v = work.apply(n, Move.return_, POLICE, v, MoveFields(reason="Not ours"))
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    work.apply(n, Move.accept, WATER, v)
    ranking = {r.department: (r.overdue_open, r.overdue_total, r.dispatched)
               for r in work.overdue_ranking(clock.now - timedelta(days=1), clock.now + timedelta(days=1))}
    assert ranking == {"police": (0, 1, 1)}  # water accepted in time; police's lateness stays police's
    assert store.get(n).department == "water" and store.get(n).supporting == ()


def test_department_parents_never_form_a_cycle_and_can_be_cleared(departments):
    departments.create("longhua", "龙华区", "Longhua District")
    departments.update("water", parent_code="longhua")
    departments.update("longhua", parent_code="police")
    for code, parent in (("police", "water"), ("police", "longhua"), ("water", "water")):
        with pytest.raises(DepartmentError, match="ancestor"):
            departments.update(code, parent_code=parent)
    assert departments.update("water", parent_code="").parent_code is None
    departments.update("police", parent_code="water")  # no cycle any more


def test_no_log_line_carries_a_confidential_citizens_number(work, store, clock, caplog):
    """The whole case, deadlines and ranking included, with every logger at DEBUG: the caller's number in
    none of its forms."""
    caplog.set_level(logging.DEBUG)
    n = queued(store, urgency="high")
    v = work.apply(n, Move.register, AGENT, 1, dataclasses.replace(REGISTER, confidential=True))
    v = work.apply(n, Move.dispatch, AGENT, v, MoveFields(lead="water"))
    with pytest.raises(StaleTicket):
        work.apply(n, Move.accept, WATER, v - 1)
    with pytest.raises(MoveNotAllowed):
        work.apply(n, Move.accept, POLICE, v)
    from types import SimpleNamespace

    from hotline.worker import check_deadlines

    assert check_deadlines(SimpleNamespace(casework=work), clock.now + timedelta(hours=1)) == 1  # logs the overdue
    work.overdue_ranking(clock.now - timedelta(days=1))
    v = work.apply(n, Move.accept, WATER, v)
    work.apply(n, Move.reply, WATER, v, MoveFields(note="Called the citizen back through a virtual number"))
    text = "\n".join(record.getMessage() + " " + str(record.__dict__) for record in caplog.records)
    assert f"ticket {n} is overdue" in text  # the sweep reads what was logged
    for form in ("+8613800138000", "8613800138000", "13800138000", "38000138", "138 0013 8000", "138-0013-8000"):
        assert form not in text
