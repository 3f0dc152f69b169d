"""Missed calls are called back (State Council guidance, 2025): the call-back list and its rules.

A caller who hangs up while waiting goes on the list, and so does one the queue let go unanswered (its
timeout: the dialplan then overflows it to the general queue, and an answer there takes it off again). When an agent is free, the hotline rings the agent's
phone first and, once the agent answers, the citizen (an Originate into ``callback_context``, whose dialplan
reports how the citizen's leg went with a UserEvent). A citizen who does not answer is tried again later, up
to ``attempts`` times. The list lives in the database: a restart of any process, of Redis or of Asterisk
loses no missed call.

States: ``waiting`` (due now or at ``next_try_at``) -> ``offering`` (the agent's phone rings) ->
``dialling`` (the agent answered; the citizen's phone rings) -> ``done`` | back to ``waiting`` | ``given_up``.
A caller without a usable number is kept as ``no_number`` (counted, never dialled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence

from sqlalchemy import Index, Integer, String, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from base.db import Base
from orders.caller import SERVICE, WITHHELD, INVALID, mask, normalise_caller
from orders.models import UTCDateTime
from orders.store import database_errors
from queues.control import QueueControl, QueueControlError
from queues.events import CallAnswered, CallBackDialled, CallerAbandoned, CallerGaveUp, OriginateResult

log = logging.getLogger("hotline.callbacks")

WAITING, OFFERING, DIALLING, DONE, GIVEN_UP, NO_NUMBER = "waiting", "offering", "dialling", "done", "given_up", "no_number"
STATES = (WAITING, OFFERING, DIALLING, DONE, GIVEN_UP, NO_NUMBER)
OPEN_STATES = (WAITING, OFFERING, DIALLING)
ORIGINATE_PREFIX = "cb-"


class CallBack(Base):
    """One missed call to be called back."""

    __tablename__ = "call_backs"
    __table_args__ = (Index("ix_call_backs_state_next", "state", "next_try_at"),
                      UniqueConstraint("call_id", name="uq_call_backs_call_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64))  # the abandoned call's Uniqueid
    queue: Mapped[str] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(64))  # as Asterisk gave it: what the carrier can dial back
    ticket: Mapped[str | None] = mapped_column(String(32), nullable=True)
    abandoned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)  # abandoned_at + callback_within_minutes
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # the citizen's phone rang this many times
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime)
    agent: Mapped[str | None] = mapped_column(String(20), nullable=True)
    originate_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    outcome: Mapped[str | None] = mapped_column(String(40), nullable=True)  # last dial status or reason
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class CallBackView:
    """A call-back as the wallboard and the API show it: the caller's number masked."""

    id: int
    queue: str
    caller: str  # masked
    ticket: str | None
    abandoned_at: datetime
    due_at: datetime
    state: str
    attempts: int
    agent: str | None
    outcome: str | None
    late: bool

    def as_dict(self) -> dict:
        return {"id": self.id, "queue": self.queue, "caller": self.caller, "ticket": self.ticket,
                "abandoned_at": self.abandoned_at.isoformat(), "due_at": self.due_at.isoformat(),
                "state": self.state, "attempts": self.attempts, "agent": self.agent, "outcome": self.outcome,
                "late": self.late}


@dataclass(frozen=True)
class CallBackNote:
    """What happened to a call-back, for its ticket's history."""

    ticket: str | None
    call_back_id: int
    what: str  # offered, agent_missed, answered, not_answered, given_up
    details: dict


@dataclass(frozen=True)
class FreeAgent:
    """An agent the call-back list may ring: code, softphone interface, the queues it serves."""

    code: str
    interface: str
    queues: frozenset[str]


class CallBackList:
    """The missed calls to call back, kept in the database."""

    def __init__(self, session_factory: sessionmaker, *, within: timedelta = timedelta(minutes=30),
                 attempts: int = 3, retry_after: timedelta = timedelta(minutes=5),
                 agent_retry_after: timedelta = timedelta(seconds=30),
                 offer_timeout: timedelta = timedelta(minutes=2), dial_timeout: timedelta = timedelta(hours=1),
                 gave_up_grace: timedelta = timedelta(minutes=1),
                 region: str = "CN", local_area_code: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._session_factory = session_factory
        self.within, self.attempts, self.retry_after = within, attempts, retry_after
        self.agent_retry_after, self.offer_timeout, self.dial_timeout = agent_retry_after, offer_timeout, dial_timeout
        self.gave_up_grace = gave_up_grace
        self._region, self._area = region, local_area_code
        self._clock = clock

    # --- from the queue's events -------------------------------------------------------------------------

    def record_missed(self, event: CallerAbandoned | CallerGaveUp) -> bool:
        """Put a missed call on the list (once per call id): a caller who hung up waiting, or one who left
        a queue unanswered (timed out: the dialplan may still overflow it to another queue, so it is due
        only after ``gave_up_grace``, and an answer there takes it off). False when it was there already."""
        number = normalise_caller(event.caller, self._region, self._area)
        usable = number.kind not in (WITHHELD, INVALID, SERVICE)
        at = datetime.fromtimestamp(event.at, timezone.utc)
        now = self._clock()
        first_try = at + (self.gave_up_grace if isinstance(event, CallerGaveUp) else timedelta(0))
        row = CallBack(call_id=event.call_id[:64], queue=event.queue[:64], caller=number.raw if usable else "",
                       ticket=(event.ticket or None) and event.ticket[:32], abandoned_at=at,
                       due_at=at + self.within, state=WAITING if usable else NO_NUMBER, attempts=0,
                       next_try_at=first_try, updated_at=now)
        try:
            with database_errors("recording a missed call"), self._session_factory.begin() as session:
                if session.scalar(select(CallBack.id).where(CallBack.call_id == row.call_id)) is not None:
                    return False
                session.add(row)
        except IntegrityError:  # the same abandon recorded at once by another process
            return False
        log.info("missed call from %s in %s put on the call-back list", mask(number), event.queue,
                 extra={"event": "callback.added", "queue": event.queue, "ticket": event.ticket or None})
        return True

    def answered_after_all(self, events: Iterable[CallAnswered]) -> int:
        """Calls that left one queue unanswered were answered in another (the dialplan's overflow): they
        need no call-back any more. One statement for a batch of answers; returns how many came off."""
        call_ids = sorted({e.call_id[:64] for e in events})
        if not call_ids:
            return 0
        now = self._clock()
        with database_errors("taking answered calls off the call-back list"), self._session_factory.begin() as session:
            return session.execute(update(CallBack).where(CallBack.call_id.in_(call_ids), CallBack.state == WAITING)
                                   .values(state=DONE, outcome="answered_in_queue", updated_at=now)).rowcount

    def on_originate(self, event: OriginateResult) -> CallBackNote | None:
        """The agent's leg: answered, the citizen is being dialled; not answered, another agent later."""
        if not event.originate_id.startswith(ORIGINATE_PREFIX):
            return None
        now = self._clock()
        with database_errors("recording a call-back's agent leg"), self._session_factory.begin() as session:
            row = session.scalar(select(CallBack).where(CallBack.originate_id == event.originate_id,
                                                        CallBack.state == OFFERING))
            if row is None:
                return None
            if event.answered:
                row.state, row.next_try_at = DIALLING, now + self.dial_timeout
                what = "answered_by_agent"
            else:
                row.state, row.next_try_at, row.agent = WAITING, now + self.agent_retry_after, None
                row.outcome = f"agent_reason_{event.reason}"
                what = "agent_missed"
            row.updated_at = now
            return CallBackNote(row.ticket, row.id, what, {"agent": row.agent, "reason": event.reason})

    def on_dialled(self, event: CallBackDialled) -> CallBackNote | None:
        """The citizen's leg: answered, the call-back is done; otherwise tried again or given up."""
        now = self._clock()
        status = (event.dial_status or "UNKNOWN").upper()[:40]
        with database_errors("recording a call-back's result"), self._session_factory.begin() as session:
            row = session.get(CallBack, event.call_back_id)
            if row is None or row.state not in (OFFERING, DIALLING):
                return None
            row.attempts += 1
            row.outcome, row.updated_at = status, now
            if status == "ANSWER":
                row.state, what = DONE, "answered"
            elif row.attempts >= self.attempts:
                row.state, what = GIVEN_UP, "given_up"
            else:
                row.state, row.next_try_at, what = WAITING, now + self.retry_after, "not_answered"
            return CallBackNote(row.ticket, row.id, what,
                                {"agent": row.agent, "dial_status": status, "attempt": row.attempts})

    # --- offering --------------------------------------------------------------------------------------

    def offer_due(self, free_agents: Sequence[FreeAgent], control: QueueControl, *, context: str,
                  caller_id: str, limit: int = 20) -> list[CallBackNote]:
        """Ring one free agent per due call-back (agents of the caller's queue first, oldest missed call
        first); each agent gets at most one. Stuck offers (no answer from Asterisk) are put back first."""
        now = self._clock()
        self.reclaim_stuck(now)
        notes: list[CallBackNote] = []
        agents = list(free_agents)
        if not agents:
            return notes
        with database_errors("reading the call-back list"), self._session_factory() as session:
            due = session.scalars(select(CallBack).where(CallBack.state == WAITING, CallBack.next_try_at <= now)
                                  .order_by(CallBack.abandoned_at).limit(limit)).all()
        for row in due:
            agent = next((a for a in agents if row.queue in a.queues), None) or agents[0]
            originate_id = f"{ORIGINATE_PREFIX}{row.id}-{row.attempts + 1}-{int(now.timestamp())}"
            with database_errors("offering a call-back"), self._session_factory.begin() as session:
                taken = session.execute(update(CallBack).where(CallBack.id == row.id, CallBack.state == WAITING)
                                        .values(state=OFFERING, agent=agent.code, originate_id=originate_id,
                                                next_try_at=now + self.offer_timeout, updated_at=now)).rowcount
            if not taken:  # another process offered it first
                continue
            try:
                control.originate(originate_id, agent.interface, context=context, exten=row.caller,
                                  caller_id=caller_id, timeout_seconds=30,
                                  variables={"HOTLINE_CALLBACK": str(row.id), "HOTLINE_TICKET": row.ticket or ""})
            except QueueControlError as exc:
                self._put_back(row.id, now, "originate_failed")
                log.warning("call-back %d not offered: %s", row.id, exc)
                break  # Asterisk is unreachable or refusing: the next round tries again
            agents.remove(agent)
            notes.append(CallBackNote(row.ticket, row.id, "offered", {"agent": agent.code}))
            if not agents:
                break
        return notes

    def reclaim_stuck(self, now: datetime | None = None) -> int:
        """Offers and dials whose result never came (the AMI link dropped it) go back to waiting."""
        now = now or self._clock()
        with database_errors("reclaiming call-backs"), self._session_factory.begin() as session:
            return session.execute(update(CallBack).where(CallBack.state.in_((OFFERING, DIALLING)),
                                                          CallBack.next_try_at <= now)
                                   .values(state=WAITING, agent=None, outcome="no_result", updated_at=now,
                                           next_try_at=now)).rowcount

    def _put_back(self, call_back_id: int, now: datetime, outcome: str) -> None:
        with database_errors("putting a call-back back"), self._session_factory.begin() as session:
            session.execute(update(CallBack).where(CallBack.id == call_back_id, CallBack.state == OFFERING)
                            .values(state=WAITING, agent=None, outcome=outcome, updated_at=now,
                                    next_try_at=now + self.agent_retry_after))

    # --- reading ---------------------------------------------------------------------------------------

    def listing(self, *, states: Iterable[str] = OPEN_STATES, limit: int = 100) -> list[CallBackView]:
        """Call-backs in the given states, oldest missed call first, callers masked."""
        now = self._clock()
        with database_errors("listing call-backs"), self._session_factory() as session:
            rows = session.scalars(select(CallBack).where(CallBack.state.in_(tuple(states)))
                                   .order_by(CallBack.abandoned_at).limit(limit)).all()
            return [CallBackView(r.id, r.queue, mask(r.caller), r.ticket,
                                 r.abandoned_at, r.due_at, r.state, r.attempts, r.agent, r.outcome,
                                 r.state in OPEN_STATES and r.due_at < now) for r in rows]
