"""How bindings end: on expiry (a job, or found expired), revoked, or with their ticket.

Ending sets ``ended_at`` and ``end_reason`` and deletes the binding's party and extension rows in the
same transaction, which frees its number for those parties; then the cache gets a tombstone. Two enders
of one binding (the job and a resolution) cannot both end it: the UPDATE only matches a live row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from base import metrics
from base.vocabulary import TicketStatus
from orders.models import Ticket
from orders.store import database_errors
from virtual_numbers.cache import BindingCache
from virtual_numbers.errors import BindingNotFound, InvalidRequest
from virtual_numbers.lookups import read_binding, refresh_cache
from virtual_numbers.models import Binding, BindingExtension, BindingParty, VirtualNumber
from virtual_numbers.views import END_REASONS, EXPIRED, REVOKED, TICKET_CLOSED, BindingView

log = logging.getLogger(__name__)

_ENDED = metrics.counter("hotline_virtual_bindings_ended_total", "Bindings ended, by reason", ["reason"])
_BATCH = 500


class Ended(NamedTuple):
    """A binding this transaction ended: what the cache must forget."""

    id: int
    number: str  # its virtual number
    citizen_e164: str
    department_number: str | None
    extension: str | None
    end_reason: str

    def __repr__(self) -> str:  # the tuple's own would show the citizen's number
        return f"Ended(binding {self.id} on {self.number}: {self.end_reason})"


class Lifecycle:
    def __init__(self, session_factory: sessionmaker, cache: BindingCache, *, clock: Callable[[], datetime],
                 days_after_close: int) -> None:
        self._session_factory = session_factory
        self._cache = cache
        self._clock = clock
        self.days_after_close = days_after_close

    def revoke(self, binding_id: int, reason: str = REVOKED) -> BindingView:
        """End one binding now (again: nothing changes)."""
        _check(reason)
        with database_errors(f"revoking binding {binding_id}"):
            self._end(select(Binding.id).where(Binding.id == binding_id), reason)
        found = read_binding(self._session_factory, binding_id)
        if found is None:
            raise BindingNotFound(f"no binding {binding_id}")
        return found

    def end_for_ticket(self, ticket_number: str, reason: str = TICKET_CLOSED) -> int:
        """End every live binding of a ticket now; returns how many."""
        _check(reason)
        with database_errors(f"ending the bindings of ticket {ticket_number}"):
            return len(self._end(select(Binding.id).where(Binding.ticket_number == ticket_number,
                                                          Binding.ended_at.is_(None)), reason))

    def ticket_closed(self, ticket_number: str, closed_at: datetime | None = None) -> int:
        """The ticket closed: its live bindings end ``days_after_close`` days later at the latest.
        Returns how many were shortened."""
        until = (closed_at or self._clock()) + timedelta(days=self.days_after_close)
        live = select(Binding.id).where(Binding.ticket_number == ticket_number, Binding.ended_at.is_(None))
        with database_errors(f"shortening the bindings of ticket {ticket_number}"), \
                self._session_factory.begin() as session:
            changed = session.execute(update(Binding).where(Binding.ticket_number == ticket_number,
                                                            Binding.ended_at.is_(None), Binding.expires_at > until)
                                      .values(expires_at=until)).rowcount
        if changed:
            refresh_cache(self._session_factory, self._cache, live)
        return changed

    def follow_closed_tickets(self) -> int:
        """Shorten the live bindings of every ticket that has closed (closed, merged or archived) to its
        closing + ``days_after_close`` (its last move's time); returns how many were shortened. The worker
        calls this beside expire_due, so closing a ticket needs no call from the casework into the broker."""
        done = (TicketStatus.closed.value, TicketStatus.merged.value, TicketStatus.archived.value)
        with database_errors("reading the bindings of closed tickets"), self._session_factory() as session:
            closed = session.execute(
                select(Ticket.number, Ticket.updated_at).join(Binding, Binding.ticket_number == Ticket.number)
                .where(Binding.ended_at.is_(None), Ticket.status.in_(done),
                       Binding.expires_at > Ticket.updated_at)  # cheap filter; ticket_closed decides exactly
                .distinct()).all()
        return sum(self.ticket_closed(number, closed_at) for number, closed_at in closed)

    def expire_due(self, now: datetime | None = None) -> int:
        """End every live binding whose expiry has passed; returns how many (a periodic job calls this)."""
        now = now or self._clock()
        total = 0
        with database_errors("ending expired bindings"):
            while True:
                ended = self._end(select(Binding.id).where(Binding.ended_at.is_(None), Binding.expires_at <= now)
                                  .order_by(Binding.expires_at).limit(_BATCH), EXPIRED, now)
                total += len(ended)
                if len(ended) < _BATCH:
                    break
        if total:
            log.info("virtual numbers: %d binding(s) expired", total)
        return total

    def end_due_holding(self, parties: Sequence[str], now: datetime) -> None:
        """End the expired bindings that still hold one of these parties, so that they free their numbers."""
        with database_errors("ending expired bindings"):
            self._end(select(BindingParty.binding_id).join(Binding, Binding.id == BindingParty.binding_id)
                      .where(BindingParty.party.in_(parties), Binding.expires_at <= now), EXPIRED, now)

    def _end(self, ids_query, reason: str, now: datetime | None = None) -> list[int]:
        with self._session_factory.begin() as session:
            ended = end_bindings(session, list(session.scalars(ids_query)), reason, now or self._clock())
        self.forget(ended)
        return [row.id for row in ended]

    def forget(self, ended: Iterable[Ended]) -> None:
        """After the commit: tombstone the ended bindings in the cache, and count them."""
        ended = list(ended)
        self._cache.forget((row.id, row.number, [row.citizen_e164] + ([row.department_number]
                                                                       if row.department_number else []),
                            row.extension) for row in ended)
        for row in ended:
            _ENDED.labels(row.end_reason).inc()


def end_bindings(session: Session, ids: Sequence[int], reason: str, now: datetime) -> list[Ended]:
    """End these bindings if still live, in the caller's transaction; returns those this transaction ended."""
    if not ids:
        return []
    # Lock in one order (by id), so that two enders of overlapping sets cannot deadlock (PostgreSQL).
    ids = list(session.scalars(select(Binding.id).where(Binding.id.in_(ids), Binding.ended_at.is_(None))
                               .order_by(Binding.id).with_for_update()))
    if not ids:
        return []
    rows = session.execute(update(Binding).where(Binding.id.in_(ids), Binding.ended_at.is_(None))
                           .values(ended_at=now, end_reason=reason)
                           .returning(Binding.id, Binding.virtual_number_id, Binding.citizen_e164,
                                      Binding.department_number, Binding.extension)).all()
    if not rows:
        return []
    done = [row.id for row in rows]
    session.execute(delete(BindingParty).where(BindingParty.binding_id.in_(done)))
    session.execute(delete(BindingExtension).where(BindingExtension.binding_id.in_(done)))
    numbers = dict(session.execute(select(VirtualNumber.id, VirtualNumber.number)
                                   .where(VirtualNumber.id.in_({row.virtual_number_id for row in rows}))).all())
    return [Ended(row.id, numbers[row.virtual_number_id], row.citizen_e164, row.department_number, row.extension,
                  reason) for row in rows]


def _check(reason: str) -> None:
    if reason not in END_REASONS:
        raise InvalidRequest(f"reason must be one of {', '.join(END_REASONS)}")
