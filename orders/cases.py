"""Casework: the moves people make on tickets, applied with their audit event, version check and deadline.

``Casework.apply`` checks a move against the state machine (orders.lifecycle), the actor's role and
department, and the version the actor saw, then writes the ticket, its assignments and one TicketEvent in
one transaction. A move on a stale version is refused (StaleTicket) and changes nothing: two people acting
on one ticket never lose an update. The call handler's snapshots (orders.store) keep writing beside it;
they never undo a move.

Deadlines (the one running now is ``due_at``, of kind ``due_kind``):

* an urgent ticket must be accepted within ``urgent_accept`` (30 minutes) of its dispatch;
* every dispatched ticket must be answered (replied) within its catalogue rule's working days, counted
  from the dispatch on the official calendar (orders.working_days);
* ``warn_at`` is when ``warn_share`` of the time has passed. ``scan_deadlines`` (a job) warns, and marks
  overdue what passed its deadline; both are recorded in the audit trail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from base.vocabulary import Role, TicketStatus, Urgency
from orders.errors import InvalidMove, StaleTicket, TicketLifecycleError, TicketNotFound
from orders.lifecycle import Move, check_move
from orders.models import Department, DispatchRule, Ticket, TicketAssignment, TicketEvent
from orders.snapshot import CONTROL_CHARACTERS
from orders.store import database_errors
from orders.working_days import WorkingCalendar

URGENT_ACCEPT = timedelta(minutes=30)
WARN_SHARE = 0.8
#: Working days to answer, by kind of request (Guangdong's rules), when no catalogue rule says otherwise.
ANSWER_DAYS = {"consultation": 2, "help": 10, "suggestion": 10, "complaint": 15, "report": 15}
DEFAULT_KIND = "help"
TEXT_LIMITS = {"category": 50, "summary": 4000, "address": 300, "district": 50, "reason": 2000, "note": 4000}
_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
SYSTEM = "deadline-watch"  # the actor of the deadline job's audit events


@dataclass(frozen=True)
class Actor:
    """Who makes a move: a name for the audit trail, a role, and a department for department users."""

    name: str
    role: Role
    department: str | None = None


@dataclass(frozen=True)
class MoveFields:
    """What a move may carry; each move requires some (orders.lifecycle.MoveRule.needs)."""

    category: str | None = None
    summary: str | None = None
    address: str | None = None
    district: str | None = None
    confidential: bool | None = None  # the citizen's wish; once confidential, a ticket stays so
    lead: str | None = None
    supporting: tuple[str, ...] = ()
    reason: str | None = None
    note: str | None = None
    into: str | None = None  # merge: the ticket this one duplicates

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoveFields:
        """From a JSON body or a form; InvalidMove names a field of the wrong type or an unknown one."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidMove(f"unknown field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None or value == "":
                continue
            if name == "confidential":
                if not isinstance(value, bool):
                    raise InvalidMove("confidential must be true or false")
            elif name == "supporting":
                if isinstance(value, str):
                    value = [part for part in re.split(r"[\s,]+", value) if part]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidMove("supporting must be a list of department codes")
                value = tuple(value)
            elif not isinstance(value, str):
                raise InvalidMove(f"{name} must be text")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class EventView:
    at: datetime
    actor: str
    role: str
    actor_department: str | None
    move: str
    from_status: str
    to_status: str
    reason: str | None
    note: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogueRule:
    """A rule of the dispatch catalogue: who handles ``category`` in ``district`` ('' = anywhere), and how
    many working days the answer may take; what the agent's dispatch is prefilled with."""

    category: str
    district: str
    kind: str
    lead: str
    supporting: tuple[str, ...]
    answer_days: int

    @classmethod
    def of(cls, rule: DispatchRule) -> CatalogueRule:
        return cls(rule.category, rule.district, rule.kind, rule.lead,
                   tuple(code for code in rule.supporting.split(",") if code), rule.answer_days)


@dataclass(frozen=True)
class DeadlineNotice:
    """A ticket the deadline job warned about or marked overdue (no caller data: it goes to logs)."""

    number: str
    department: str | None
    due_at: datetime
    due_kind: str
    overdue: bool


@dataclass(frozen=True)
class DepartmentLateness:
    """One line of the overdue ranking."""

    department: str
    overdue_open: int  # open tickets past their deadline now
    overdue_total: int  # tickets that went overdue in the period, open or not
    dispatched: int  # tickets dispatched to it in the period


class Casework:
    """The moves on tickets, over a SQLAlchemy session factory."""

    def __init__(self, session_factory: sessionmaker, calendar: WorkingCalendar, *,
                 urgent_accept: timedelta = URGENT_ACCEPT, warn_share: float = WARN_SHARE,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if not 0 < warn_share < 1:
            raise ValueError(f"warn_share must be between 0 and 1, got {warn_share}")
        self._session_factory = session_factory
        self.calendar = calendar
        self.urgent_accept = urgent_accept
        self.warn_share = warn_share
        self._clock = clock

    # -- moves -------------------------------------------------------------------------------------

    def apply(self, number: str, move: Move | str, actor: Actor, version: int,
              fields: MoveFields = MoveFields()) -> int:
        """Make ``move`` on ticket ``number`` as ``actor``, who saw ``version``; returns the new version.

        Raises TicketNotFound, MoveNotAllowed, TicketLifecycleError (not from this status), InvalidMove (a
        field missing or wrong) or StaleTicket (someone moved it since ``version``). Nothing is written then.
        """
        fields = _clean(fields)
        now = self._clock()
        with database_errors(f"moving ticket {number}"), self._session_factory.begin() as session:
            ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one_or_none()
            if ticket is None:
                raise TicketNotFound(f"no ticket {number}")
            lead, supporting = _assignments(session, ticket.id)
            lead = lead or ticket.department  # a ticket given a department before any dispatch (an import, a snapshot)
            # The role and department are checked first (MoveNotAllowed): a department that is not assigned may
            # not learn even the ticket's version. Then a stale version: the actor decided on an old state.
            try:
                rule = check_move(move, ticket.status, actor.role, actor.department, lead, supporting)
            except TicketLifecycleError:
                if ticket.version == version:
                    raise
                rule = None
            if ticket.version != version:
                raise StaleTicket(f"ticket {number} changed since version {version} (now {ticket.version}): "
                                  f"read it again", ticket.version)
            missing = [name for name in rule.needs if not getattr(fields, name)]
            if missing:
                raise InvalidMove(f"{rule.move.value} needs {', '.join(missing)}")
            values: dict[str, Any] = {"status": rule.target.value, "updated_at": now, "version": version + 1}
            details = self._effects(session, ticket, rule.move, fields, now, values)
            ticket_id, from_status = ticket.id, ticket.status
            result = session.execute(
                update(Ticket).where(Ticket.id == ticket_id, Ticket.version == version).values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # a concurrent move committed between our read and this write
                current = session.scalar(select(Ticket.version).where(Ticket.id == ticket_id))
                raise StaleTicket(f"ticket {number} changed while this move was being made: read it again", current)
            session.add(TicketEvent(
                ticket_id=ticket_id, at=now, actor=actor.name, role=Role(actor.role).value,
                actor_department=actor.department, move=rule.move.value, from_status=from_status,
                to_status=rule.target.value, reason=fields.reason, note=fields.note,
                details=json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None,
            ))
        return version + 1

    def note_event(self, number: str, what: str, actor: str, details: dict[str, Any] | None = None) -> bool:
        """Write an event into a ticket's history without moving it (a call-back rang, was answered...);
        False when there is no such ticket (a missed call whose ticket never reached the database)."""
        now = self._clock()
        with database_errors(f"noting {what} on ticket {number}"), self._session_factory.begin() as session:
            row = session.execute(select(Ticket.id, Ticket.status).where(Ticket.number == number)).one_or_none()
            if row is None:
                return False
            session.add(TicketEvent(ticket_id=row.id, at=now, actor=actor[:100], role="system",
                                    actor_department=None, move=what[:20], from_status=row.status,
                                    to_status=row.status, reason=None, note=None,
                                    details=json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None))
        return True

    def _effects(self, session: Session, ticket: Ticket, move: Move, fields: MoveFields, now: datetime,
                 values: dict[str, Any]) -> dict[str, Any]:
        """The columns ``move`` sets beside the status (into ``values``); returns the audit event's details."""
        details: dict[str, Any] = {}
        if move is Move.register:
            values.update(category=fields.category, summary=fields.summary, address=fields.address,
                          district=fields.district, confidential=bool(ticket.confidential or fields.confidential))
            details = {"category": fields.category, "confidential": values["confidential"]}
        elif move is Move.dispatch:
            lead, supporting = self._departments(session, fields)
            session.execute(update(TicketAssignment).where(TicketAssignment.ticket_id == ticket.id,
                                                           TicketAssignment.ended_at.is_(None)).values(ended_at=now)
                            .execution_options(synchronize_session=False))
            session.add(TicketAssignment(ticket_id=ticket.id, department=lead, lead=True, assigned_at=now))
            session.add_all(TicketAssignment(ticket_id=ticket.id, department=code, lead=False, assigned_at=now)
                            for code in supporting)
            values.update(department=lead, dispatched_at=now, overdue_since=None)
            values.update(self._deadline(session, ticket, now, accepted=False))
            details = {"lead": lead, "supporting": list(supporting), "due_at": values["due_at"].isoformat(),
                       "due_kind": values["due_kind"]}
        elif move is Move.accept:
            if ticket.due_kind == "accept":  # the urgent clock stops; the answer's runs from the dispatch
                values.update(self._deadline(session, ticket, ticket.dispatched_at or now, accepted=True))
                # A late acceptance stays in the audit trail ("overdue"); the answer's deadline is watched anew.
                values["overdue_since"] = None
        elif move in (Move.return_, Move.resolve, Move.reply, Move.close, Move.reopen, Move.archive):
            values.update(due_at=None, due_kind=None, warn_at=None)
            if move is Move.return_:
                details = {"department": ticket.department}
        elif move is Move.merge:
            into = self._merge_target(session, ticket, fields.into)
            values.update(merged_into=into, due_at=None, due_kind=None, warn_at=None)
            details = {"into": into}
        return details

    def _departments(self, session: Session, fields: MoveFields) -> tuple[str, tuple[str, ...]]:
        lead = fields.lead
        supporting = tuple(dict.fromkeys(code for code in fields.supporting if code != lead))
        codes = (lead, *supporting)
        known = set(session.scalars(select(Department.code).where(Department.code.in_(codes),
                                                                   Department.active.is_(True))))
        unknown = [code for code in codes if code not in known]
        if unknown:
            raise InvalidMove(f"no active department {', '.join(unknown)}")
        return lead, supporting

    def _deadline(self, session: Session, ticket: Ticket, dispatched_at: datetime, accepted: bool) -> dict[str, Any]:
        if ticket.urgency == Urgency.high.value and not accepted:
            due, kind = dispatched_at + self.urgent_accept, "accept"
        else:
            rule = self._rule(session, ticket.category, ticket.district)
            days = rule.answer_days if rule is not None else ANSWER_DAYS[DEFAULT_KIND]
            due, kind = self.calendar.working_days_deadline(dispatched_at, days), "answer"
        warn = dispatched_at + (due - dispatched_at) * self.warn_share
        return {"due_at": due, "due_kind": kind, "warn_at": warn}

    def _merge_target(self, session: Session, ticket: Ticket, into: str | None) -> str:
        if into == ticket.number:
            raise InvalidMove("a ticket cannot be merged into itself")
        target = session.execute(select(Ticket.status, Ticket.merged_into).where(Ticket.number == into)).one_or_none()
        if target is None:
            raise InvalidMove(f"no ticket {into} to merge into")
        if target.status in (TicketStatus.merged.value, TicketStatus.archived.value):
            raise InvalidMove(f"ticket {into} is {target.status}: merge into the ticket it was merged into")
        return into

    # -- reading ----------------------------------------------------------------------------------

    def events(self, number: str) -> list[EventView]:
        """The audit trail of ticket ``number``, oldest first; TicketNotFound if there is no such ticket."""
        with database_errors(f"reading the history of ticket {number}"), self._session_factory() as session:
            ticket_id = session.scalar(select(Ticket.id).where(Ticket.number == number))
            if ticket_id is None:
                raise TicketNotFound(f"no ticket {number}")
            rows = session.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
                                   .order_by(TicketEvent.at, TicketEvent.id))
            return [EventView(r.at, r.actor, r.role, r.actor_department, r.move, r.from_status, r.to_status, r.reason,
                              r.note, json.loads(r.details) if r.details else {}) for r in rows]

    def suggest(self, category: str | None, district: str | None = None) -> CatalogueRule | None:
        """The catalogue's dispatch for ``category`` in ``district`` (or anywhere), if it has one."""
        if not category:
            return None
        with database_errors("reading the dispatch catalogue"), self._session_factory() as session:
            rule = self._rule(session, category, district)
            return CatalogueRule.of(rule) if rule is not None else None

    @staticmethod
    def _rule(session: Session, category: str | None, district: str | None) -> DispatchRule | None:
        if not category:
            return None
        districts = [district, ""] if district else [""]
        rules = {rule.district: rule for rule in session.scalars(
            select(DispatchRule).where(DispatchRule.category == category, DispatchRule.district.in_(districts)))}
        return rules.get(district or "") or rules.get("")

    # -- deadlines --------------------------------------------------------------------------------

    def scan_deadlines(self, now: datetime | None = None, limit: int = 1000) -> list[DeadlineNotice]:
        """Warn about tickets past ``warn_share`` of their time and mark overdue those past their deadline,
        each once, with an audit event; returns what it did (at most ``limit`` of each per call)."""
        now = now or self._clock()
        notices: list[DeadlineNotice] = []
        with database_errors("scanning ticket deadlines"), self._session_factory.begin() as session:
            late = session.execute(
                select(Ticket.id, Ticket.number, Ticket.department, Ticket.due_at, Ticket.due_kind, Ticket.status)
                .where(Ticket.due_at <= now, Ticket.overdue_since.is_(None)).limit(limit)
            ).all()
            for row in late:
                session.execute(update(Ticket).where(Ticket.id == row.id).values(overdue_since=row.due_at,
                                                                                 warn_at=None))
                session.execute(update(TicketAssignment).where(  # the lateness stays with this dispatch
                    TicketAssignment.ticket_id == row.id, TicketAssignment.lead.is_(True),
                    TicketAssignment.ended_at.is_(None), TicketAssignment.overdue_since.is_(None),
                ).values(overdue_since=row.due_at))
                session.add(self._system_event(row, now, "overdue"))
                notices.append(DeadlineNotice(row.number, row.department, row.due_at, row.due_kind, True))
            warned = session.execute(
                select(Ticket.id, Ticket.number, Ticket.department, Ticket.due_at, Ticket.due_kind, Ticket.status)
                .where(Ticket.warn_at <= now, Ticket.due_at > now).limit(limit)
            ).all()
            for row in warned:
                session.execute(update(Ticket).where(Ticket.id == row.id).values(warn_at=None))
                session.add(self._system_event(row, now, "warned"))
                notices.append(DeadlineNotice(row.number, row.department, row.due_at, row.due_kind, False))
        return notices

    @staticmethod
    def _system_event(row, now: datetime, what: str) -> TicketEvent:
        return TicketEvent(ticket_id=row.id, at=now, actor=SYSTEM, role="system", actor_department=None,
                           move=what, from_status=row.status, to_status=row.status, reason=None, note=None,
                           details=json.dumps({"due_at": row.due_at.isoformat(), "due_kind": row.due_kind}))

    def overdue_ranking(self, since: datetime, until: datetime | None = None) -> list[DepartmentLateness]:
        """Departments by lateness (the seed's published list): tickets in their hands and overdue now, then
        their dispatches that went overdue in [since, until) -- a dispatch that ran late counts for its
        department even after the ticket went back and on to another -- and how many were dispatched to
        them in that time."""
        until = until or self._clock()
        # Late now: still in the department's hands. A late reply, or a ticket it returned, is the hotline's.
        hands = [status.value for status in (TicketStatus.dispatched, TicketStatus.accepted, TicketStatus.in_progress)]
        lead = TicketAssignment.lead.is_(True)
        with database_errors("ranking departments by lateness"), self._session_factory() as session:
            now_late = dict(session.execute(
                select(Ticket.department, func.count())
                .where(Ticket.overdue_since.is_not(None), Ticket.status.in_(hands), Ticket.department.is_not(None))
                .group_by(Ticket.department)).all())
            went_late = dict(session.execute(
                select(TicketAssignment.department, func.count())
                .where(lead, TicketAssignment.overdue_since >= since, TicketAssignment.overdue_since < until)
                .group_by(TicketAssignment.department)).all())
            sent = dict(session.execute(
                select(TicketAssignment.department, func.count())
                .where(lead, TicketAssignment.assigned_at >= since, TicketAssignment.assigned_at < until)
                .group_by(TicketAssignment.department)).all())
        rows = [DepartmentLateness(code, now_late.get(code, 0), went_late.get(code, 0), sent.get(code, 0))
                for code in set(now_late) | set(went_late)]
        return sorted(rows, key=lambda r: (-r.overdue_open, -r.overdue_total, r.department))


def _assignments(session: Session, ticket_id: int) -> tuple[str | None, frozenset[str]]:
    lead, supporting = None, set()
    for department, is_lead in session.execute(
            select(TicketAssignment.department, TicketAssignment.lead)
            .where(TicketAssignment.ticket_id == ticket_id, TicketAssignment.ended_at.is_(None))):
        if is_lead:
            lead = department
        else:
            supporting.add(department)
    return lead, frozenset(supporting)


def _clean(fields: MoveFields) -> MoveFields:
    """Text fields without control characters (newlines kept in notes), cut to size; codes checked."""
    changes: dict[str, Any] = {}
    for name, limit in TEXT_LIMITS.items():
        value = getattr(fields, name)
        if value is None:
            continue
        keep_lines = name in ("summary", "reason", "note", "address")
        text = "\n".join(CONTROL_CHARACTERS.sub("", line) for line in value.splitlines()) if keep_lines \
            else CONTROL_CHARACTERS.sub("", value)
        text = text.strip()[:limit]
        changes[name] = text or None
    for name in ("lead", "into"):
        value = getattr(fields, name)
        if value is not None:
            changes[name] = value.strip()
    if fields.lead is not None and not _CODE.fullmatch(changes["lead"]):
        raise InvalidMove(f"lead must be a department code, got {fields.lead[:60]!r}")
    for code in fields.supporting:
        if not _CODE.fullmatch(code):
            raise InvalidMove(f"supporting must list department codes, got {code[:60]!r}")
    if fields.into is not None and not re.fullmatch(r"[0-9]{1,20}", changes["into"]):
        raise InvalidMove("into must be a ticket number")
    return MoveFields(**{**fields.__dict__, **changes})


def valid_code(code: str) -> bool:
    """Whether ``code`` can name a department (lowercase letters, digits, '-' and '_')."""
    return isinstance(code, str) and _CODE.fullmatch(code) is not None
