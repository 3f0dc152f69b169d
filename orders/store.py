"""TicketStore: tickets in the database, written from snapshots so that a retry can never do harm.

``save`` is an idempotent upsert keyed by the ticket number. A snapshot is applied only if its revision
is higher than the stored one, with a compare-and-set on the revision, so duplicates, stale retries and
concurrent workers all end with the newest snapshot stored once.

Once an agent has taken a ticket (its status has left orders.lifecycle.CALL_PHASE), a late snapshot
still records what the call owns (the call record, IVR path, language) but no longer touches status,
category, urgency or department: a retry delivered after the agent started work must not undo it.
A snapshot may set ``confidential``, never clear it.

``settle_stale_calls`` settles the tickets of calls whose handler died (a FastAGI process killed) and left
them ``in_ivr``: they become ``queued`` (the dialplan's fallback queued the caller) without a new revision,
so any snapshot the handler did manage to keep (a spool replay) still wins over the guess.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, or_, select, true, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from orders.errors import BatchNotApplied, SnapshotConflict, StorageError, StorageUnavailable, safe_error_text
from orders.lifecycle import CALL_PHASE, CallOutcome, TicketStatus
from orders.models import CallRecord, Ticket, TicketAssignment, TicketSequence
from orders.snapshot import TicketSnapshot
from orders.views import CallView, TicketFilter, TicketView

__all__ = ["TicketStore", "TicketSequenceStore", "TicketFilter", "TicketView", "CallView"]

_MAX_ATTEMPTS = 50
_SETTLE_BATCH = 500

_TICKET_FIELDS = (
    "caller_raw", "caller_e164", "caller_kind", "channel", "language", "ivr_path", "category",
    "urgency", "confidential", "status", "department", "created_at", "updated_at",
)
_CALL_PHASE_VALUES = frozenset(status.value for status in CALL_PHASE)
_CALL_OWNED = ("caller_raw", "caller_e164", "caller_kind", "channel", "language", "ivr_path")
_UPDATED_FIELDS = tuple(name for name in _TICKET_FIELDS if name != "created_at")  # a call-phase ticket's


_T = Ticket.__table__
_C = CallRecord.__table__
_READ_TICKET = select(_T.c.id, _T.c.revision, _T.c.status, _T.c.created_at, _T.c.updated_at,
                      _T.c.confidential).where(_T.c.number == bindparam("number"))
_CALL_OWNER = (select(_T.c.number).select_from(_C.join(_T, _C.c.ticket_id == _T.c.id))
               .where(_C.c.uniqueid == bindparam("uniqueid")))
_READ_CALL = select(_C.c.id, _C.c.ticket_id).where(_C.c.uniqueid == bindparam("uniqueid"))
_INSERT_TICKET = _T.insert()
# Batches (save_many): the rows of many numbers in one read.
_READ_TICKETS = select(_T.c.number, _T.c.id, _T.c.revision, _T.c.status, _T.c.created_at, _T.c.updated_at,
                       _T.c.confidential).where(_T.c.number.in_(bindparam("numbers", expanding=True)))
_CALLS_TAKEN = select(_C.c.id).where(_C.c.uniqueid.in_(bindparam("uniqueids", expanding=True))).limit(1)
_INSERT_TICKETS = _T.insert().returning(_T.c.number, _T.c.id)  # rows in any order: matched by number
_INSERT_CALL = _C.insert()
_UPDATE_OWN_CALL = _C.update().where(_C.c.uniqueid == bindparam("_uniqueid"), _C.c.ticket_id == bindparam("_ticket_id"))
# The repeat-caller lookup (orders.repeat_callers), for many calls at once: built once, on a plain connection.
_RECENT_TICKETS = select(_T.c.caller_e164, _T.c.number, _T.c.created_at).where(
    _T.c.caller_e164.in_(bindparam("callers", expanding=True)), _T.c.created_at >= bindparam("since"))
# The compare-and-set on the revision; the SET clause comes from the parameters given at execution. A call-phase
# ticket is updated whole only while it is still in the call phase: a move (orders.cases) made between our
# read and this write makes it match nothing, and the next round updates only the call's own fields.
_UPDATE_TICKET = _T.update().where(_T.c.id == bindparam("_id"), _T.c.revision == bindparam("_revision"))
# The statuses are written into the SQL (our own vocabulary, no quotes in it): an expanding IN parameter
# cannot go with a batch's executemany.
_UPDATE_CALL_PHASE_TICKET = _UPDATE_TICKET.where(
    _T.c.status.in_([literal_column(f"'{status}'") for status in sorted(s.value for s in CALL_PHASE)]))


class _Contended(Exception):
    """Another writer changed the ticket between our read and our write: read again."""


def _unreachable(exc: sa_exc.SQLAlchemyError) -> bool:
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


@contextlib.contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into ours; their text is reduced so no parameter (phone number) leaks."""
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        if _unreachable(exc):
            error: StorageError = StorageUnavailable(
                f"the ticket database cannot be reached while {action}: {safe_error_text(exc)}"
            )
        else:
            error = StorageError(f"the ticket database failed while {action}: {safe_error_text(exc)}")
        error.original = exc  # for a debugger; deliberately not chained into tracebacks
        raise error from None


class TicketStore:
    """Tickets over a SQLAlchemy session factory. Every method raises StorageUnavailable when the
    database cannot be reached and StorageError for other database failures."""

    def __init__(self, session_factory: sessionmaker) -> None:
        self._session_factory = session_factory
        self._engine = session_factory.kw["bind"]
        self._readers = threading.local()  # per thread: a connection kept for the call path's lookup
        self._all_readers: list[Connection] = []  # every thread's, for close()
        self._readers_lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------

    def save(self, snapshot: TicketSnapshot) -> bool:
        """Store ``snapshot`` unless the stored ticket already has this revision or a newer one.

        Returns True if something was written. Raises SnapshotConflict if the number (or the call's
        uniqueid) already belongs to another call.
        """
        last_error = "the ticket kept changing under us"
        with database_errors(f"saving ticket {snapshot.number}"):
            for _ in range(_MAX_ATTEMPTS):
                try:
                    with self._engine.begin() as conn:
                        return self._apply(conn, snapshot)
                except _Contended:
                    continue
                except sa_exc.IntegrityError as exc:
                    # Usually a concurrent insert of the same number: the next round reads the winner's row.
                    last_error = safe_error_text(exc)
                    continue
            raise StorageError(f"ticket {snapshot.number} not saved after {_MAX_ATTEMPTS} attempts ({last_error})")

    def save_many(self, snapshots: Sequence[TicketSnapshot]) -> None:
        """Store several snapshots in one transaction, as ``save`` would store each.

        All or nothing: raises StorageUnavailable when the database cannot be reached, and BatchNotApplied
        when one snapshot of the batch contends with a concurrent writer or clashes with another ticket
        (then save them one by one, each with its own outcome).

        A batch of distinct tickets (what the writer sends) is applied set-wise: one read of the stored
        rows, then one statement per kind of write for the whole batch, instead of three or four
        statements per snapshot (bench/ticket_store.py). Anything the set-wise path cannot decide alone
        (a call record already taken, a missing one, a row changed under us) gives up the batch, and the
        one-by-one path sorts it out.
        """
        try:
            with database_errors(f"saving {len(snapshots)} tickets"), self._engine.begin() as conn:
                if _distinct(snapshots):
                    self._apply_set(conn, snapshots)
                else:  # several revisions of one ticket: each applies over the last, in order
                    for snapshot in snapshots:
                        self._apply(conn, snapshot)
        except StorageUnavailable:
            raise
        except (_Contended, StorageError) as exc:
            raise BatchNotApplied(f"a batch of {len(snapshots)} ticket snapshots was not applied "
                                  f"({type(exc).__name__}); save them one by one") from None

    def _apply_set(self, conn: Connection, snapshots: Sequence[TicketSnapshot]) -> None:
        """``_apply`` for a batch of distinct tickets and calls, a statement per kind of write."""
        rows = {row.number: row for row in conn.execute(_READ_TICKETS, {"numbers": [s.number for s in snapshots]})}
        new = [s for s in snapshots if s.number not in rows]
        new_calls = [s for s in new if s.has_call]
        if new_calls and conn.execute(_CALLS_TAKEN, {"uniqueids": [s.uniqueid for s in new_calls]}).first():
            raise _Contended  # a call already has its ticket: _apply tells a racing save from a clash
        if new:
            ticket_ids = dict(conn.execute(_INSERT_TICKETS, [
                {**{name: getattr(s, name) for name in _TICKET_FIELDS}, "number": s.number, "revision": s.revision}
                for s in new]).all())
            if new_calls:
                conn.execute(_INSERT_CALL, [{"ticket_id": ticket_ids[s.number], **_call_values(s)} for s in new_calls])
        updates: dict[bool, list[dict[str, Any]]] = {True: [], False: []}  # by call phase
        own_calls = []
        for snap in snapshots:
            row = rows.get(snap.number)
            if row is None:
                continue
            if row.created_at != snap.created_at:
                raise SnapshotConflict(f"ticket number {snap.number} belongs to another ticket")
            if row.revision >= snap.revision:
                continue
            call_phase = row.status in _CALL_PHASE_VALUES
            names = _UPDATED_FIELDS if call_phase else _CALL_OWNED
            values = {name: getattr(snap, name) for name in names}
            values.update(confidential=row.confidential or snap.confidential,
                          updated_at=max(row.updated_at, snap.updated_at), revision=snap.revision,
                          _id=row.id, _revision=row.revision)
            updates[call_phase].append(values)
            if snap.has_call:
                own_calls.append({"_uniqueid": snap.uniqueid, "_ticket_id": row.id, **_call_values(snap)})
        for call_phase, values in updates.items():
            statement = _UPDATE_CALL_PHASE_TICKET if call_phase else _UPDATE_TICKET
            if values and conn.execute(statement, values).rowcount != len(values):
                raise _Contended
        if own_calls and conn.execute(_UPDATE_OWN_CALL, own_calls).rowcount != len(own_calls):
            raise _Contended  # a call record to insert, or one that is another ticket's: _apply decides

    def _apply(self, conn: Connection, snap: TicketSnapshot) -> bool:
        # Core statements built once (module level), on a plain connection rather than an ORM session: a
        # save runs on every call, twice, and ORM statements, then the session's own bookkeeping, were
        # most of its cost (bench/ticket_store.py).
        row = conn.execute(_READ_TICKET, {"number": snap.number}).one_or_none()
        if row is None:
            if snap.has_call:
                owner = conn.execute(_CALL_OWNER, {"uniqueid": snap.uniqueid}).scalar()
                if owner == snap.number:
                    raise _Contended  # a concurrent save inserted this very ticket after our first read
                if owner is not None:
                    raise SnapshotConflict(
                        f"call {snap.uniqueid} already belongs to another ticket; ticket {snap.number} not saved"
                    )
            values = {name: getattr(snap, name) for name in _TICKET_FIELDS}
            values.update(number=snap.number, revision=snap.revision)
            ticket_id = conn.execute(_INSERT_TICKET, values).inserted_primary_key[0]
            if snap.has_call:
                conn.execute(_INSERT_CALL, {"ticket_id": ticket_id, **_call_values(snap)})
            return True

        if row.created_at != snap.created_at:
            raise SnapshotConflict(
                f"ticket number {snap.number} already belongs to a ticket opened at {row.created_at.isoformat()}; "
                f"the snapshot opened at {snap.created_at.isoformat()} was not saved"
            )
        if row.revision >= snap.revision:
            return False

        call_phase = row.status in _CALL_PHASE_VALUES
        values = {name: getattr(snap, name) for name in (_UPDATED_FIELDS if call_phase else _CALL_OWNED)}
        values["confidential"] = row.confidential or snap.confidential
        values["updated_at"] = max(row.updated_at, snap.updated_at)
        values["revision"] = snap.revision
        statement = _UPDATE_CALL_PHASE_TICKET if call_phase else _UPDATE_TICKET
        result = conn.execute(statement, {"_id": row.id, "_revision": row.revision, **values})
        if result.rowcount != 1:
            raise _Contended
        if snap.has_call:
            call_values = _call_values(snap)
            # Usually the ticket's own call is there: update it in one statement, look only when it is not.
            owned = {"_uniqueid": snap.uniqueid, "_ticket_id": row.id, **call_values}
            if conn.execute(_UPDATE_OWN_CALL, owned).rowcount != 1:
                call = conn.execute(_READ_CALL, {"uniqueid": snap.uniqueid}).one_or_none()
                if call is not None:
                    raise SnapshotConflict(
                        f"call {snap.uniqueid} already belongs to another ticket; ticket {snap.number} not saved"
                    )
                conn.execute(_INSERT_CALL, {"ticket_id": row.id, **call_values})
        return True

    def settle_stale_calls(self, older_than: datetime, now: datetime | None = None) -> int:
        """Settle tickets still ``in_ivr`` that were created before ``older_than``: status ``queued``,
        their open call records' outcome ``fallback``; returns how many tickets were settled.

        A call whose AGI session died (its process was killed) keeps the ticket ``in_ivr`` for ever; the
        dialplan's fallback queued that caller (HOTLINE_TICKET is set before the first prompt), so
        ``queued`` is what happened. The revision is left alone: a later, truer snapshot of the call (a
        higher revision, e.g. replayed from a spool) still applies over the guess. Idempotent; safe with
        concurrent workers (the status condition is re-checked by the UPDATE that changes a row).
        """
        if older_than.tzinfo is None or older_than.utcoffset() is None:
            raise ValueError("older_than must carry a time zone")
        now = now or datetime.now(timezone.utc)
        in_ivr, queued = TicketStatus.in_ivr.value, TicketStatus.queued.value
        settled = 0
        with database_errors("settling stale calls"):
            while True:
                with self._session_factory.begin() as session:
                    conn = session.connection()
                    candidates = conn.execute(
                        select(_T.c.id).where(_T.c.status == in_ivr, _T.c.created_at < older_than)
                        .order_by(_T.c.id).limit(_SETTLE_BATCH)
                    ).scalars().all()
                    if not candidates:
                        return settled
                    ids = conn.execute(
                        _T.update().where(_T.c.id.in_(candidates), _T.c.status == in_ivr)
                        .values(status=queued, updated_at=now).returning(_T.c.id)
                    ).scalars().all()
                    if ids:
                        conn.execute(
                            _C.update().where(_C.c.ticket_id.in_(ids), _C.c.outcome.is_(None))
                            .values(outcome=CallOutcome.fallback.value)
                        )
                    settled += len(ids)
                if len(candidates) < _SETTLE_BATCH:
                    return settled

    def caller_left_queue(self, number: str, at: datetime) -> bool:
        """A caller hung up while waiting in a queue (Asterisk's QueueCallerAbandon): a ticket still
        ``queued`` becomes ``abandoned_in_queue``. Its revision goes up, so an older snapshot of the call
        replayed later (from a spool) cannot put it back to ``queued``. False when nothing changed."""
        queued = TicketStatus.queued.value
        with database_errors(f"marking ticket {number} abandoned in the queue"), self._session_factory.begin() as session:
            return session.connection().execute(
                _T.update().where(_T.c.number == number, _T.c.status == queued)
                .values(status=TicketStatus.abandoned_in_queue.value, updated_at=at, revision=_T.c.revision + 1)
            ).rowcount == 1

    # -- reading ---------------------------------------------------------------------------------

    def get(self, number: str) -> TicketView | None:
        with database_errors(f"reading ticket {number}"), self._session_factory() as session:
            ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one_or_none()
            if ticket is None:
                return None
            return _views(session, [ticket])[0]

    def status_of(self, number: str) -> str | None:
        with database_errors(f"reading the status of ticket {number}"), self._session_factory() as session:
            return session.scalar(select(Ticket.status).where(Ticket.number == number))

    def recent_tickets(self, callers: Sequence[str], since: datetime) -> list[tuple[str, str, datetime]]:
        """(caller, number, created_at) of every ticket these callers (E.164) opened at or after ``since``."""
        if not callers:
            return []
        params = {"callers": sorted(set(callers)), "since": since}
        with database_errors("looking up callers' recent tickets"):
            conn = self._reader()
            try:
                return [tuple(row) for row in conn.execute(_RECENT_TICKETS, params)]
            except sa_exc.SQLAlchemyError:
                self._readers.conn = None
                conn.close()
                raise

    def _reader(self) -> Connection:
        """This thread's autocommit connection for the repeat-caller lookup, kept between lookups: taking a
        connection from the pool and giving it back cost more than the query (54 against 22 us of CPU).
        Autocommit, so no transaction stays open between lookups. One thread asks (orders.repeat_callers),
        so one connection is kept per process."""
        conn = getattr(self._readers, "conn", None)
        if conn is None or conn.closed:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._readers.conn = conn
            with self._readers_lock:
                self._all_readers = [c for c in self._all_readers if not c.closed] + [conn]
        return conn

    def close(self) -> None:
        """Give back the connections the lookups keep (the engine's dispose() cannot: they are checked out)."""
        with self._readers_lock:
            readers, self._all_readers = self._all_readers, []
        for conn in readers:
            try:
                conn.close()
            except sa_exc.SQLAlchemyError:
                pass

    def search(self, filters: TicketFilter) -> tuple[list[TicketView], int]:
        """Tickets matching ``filters``, newest first, one page of them, and how many match in all."""
        conditions: list[Any] = [
            getattr(Ticket, name) == getattr(filters, name)
            for name in ("status", "category", "urgency", "language", "channel", "caller_e164")
            if getattr(filters, name) is not None
        ]
        if filters.department is not None:  # its tickets: those it leads and those it supports
            supported = select(TicketAssignment.ticket_id).where(TicketAssignment.department == filters.department,
                                                                 TicketAssignment.ended_at.is_(None))
            conditions.append(or_(Ticket.department == filters.department, Ticket.id.in_(supported)))
        if filters.created_from is not None:
            conditions.append(Ticket.created_at >= filters.created_from)
        if filters.created_to is not None:
            conditions.append(Ticket.created_at < filters.created_to)
        where = and_(true(), *conditions)
        with database_errors("searching tickets"), self._session_factory() as session:
            total = session.scalar(select(func.count()).select_from(Ticket).where(where))
            tickets = session.scalars(
                select(Ticket).where(where).order_by(Ticket.created_at.desc(), Ticket.id.desc())
                .limit(filters.limit).offset(filters.offset)
            ).all()
            return _views(session, list(tickets)), int(total or 0)


def _distinct(snapshots: Sequence[TicketSnapshot]) -> bool:
    """No two snapshots of the batch share a ticket number or a call."""
    numbers = {s.number for s in snapshots}
    calls = [s.uniqueid for s in snapshots if s.has_call]
    return len(numbers) == len(snapshots) and len(set(calls)) == len(calls)


def _call_values(snap: TicketSnapshot) -> dict[str, Any]:
    return {
        "uniqueid": snap.uniqueid,
        "linkedid": snap.linkedid,
        "channel": snap.call_channel,
        "dialed_number": snap.dialed_number,
        "started_at": snap.started_at,
        "answered_at": snap.answered_at,
        "ended_at": snap.ended_at,
        "outcome": snap.outcome,
    }


def _views(session: Session, tickets: list[Ticket]) -> list[TicketView]:
    calls: dict[int, list[CallView]] = {ticket.id: [] for ticket in tickets}
    supporting: dict[int, list[str]] = {ticket.id: [] for ticket in tickets}
    if tickets:
        for ticket_id, department in session.execute(
                select(TicketAssignment.ticket_id, TicketAssignment.department)
                .where(TicketAssignment.ticket_id.in_(calls), TicketAssignment.lead.is_(False),
                       TicketAssignment.ended_at.is_(None))):
            supporting[ticket_id].append(department)
        records = session.scalars(
            select(CallRecord).where(CallRecord.ticket_id.in_(calls)).order_by(CallRecord.started_at, CallRecord.id)
        )
        for record in records:
            calls[record.ticket_id].append(
                CallView(
                    uniqueid=record.uniqueid,
                    linkedid=record.linkedid,
                    channel=record.channel,
                    dialed_number=record.dialed_number,
                    started_at=record.started_at,
                    answered_at=record.answered_at,
                    ended_at=record.ended_at,
                    outcome=record.outcome,
                )
            )
    return [
        TicketView(
            number=t.number, caller_raw=t.caller_raw, caller_e164=t.caller_e164, caller_kind=t.caller_kind,
            channel=t.channel, language=t.language, ivr_path=t.ivr_path, category=t.category, urgency=t.urgency,
            confidential=t.confidential, status=t.status, department=t.department, created_at=t.created_at,
            updated_at=t.updated_at, revision=t.revision, calls=tuple(calls[t.id]), version=t.version,
            summary=t.summary, address=t.address, district=t.district, supporting=tuple(sorted(supporting[t.id])),
            merged_into=t.merged_into, dispatched_at=t.dispatched_at, due_at=t.due_at, due_kind=t.due_kind,
            overdue_since=t.overdue_since,
        )
        for t in tickets
    ]


class TicketSequenceStore:
    """The database side of ticket numbering (orders.ticket_numbers): the highest number issued for a
    day, and the fallback counter used while Redis is down."""

    def __init__(self, session_factory: sessionmaker) -> None:
        self._session_factory = session_factory

    def highest_sequence(self, day: str, max_digits: int) -> int:
        """The largest sequence among tickets numbered ``day`` + at most ``max_digits`` digits; 0 if none."""
        length = func.length(Ticket.number)
        query = (
            select(Ticket.number)
            .where(Ticket.number > day, Ticket.number <= day + "9" * max_digits, length <= len(day) + max_digits)
            .order_by(length.desc(), Ticket.number.desc())
            .limit(1)
        )
        with database_errors(f"reading the last ticket number of {day}"), self._session_factory() as session:
            number = session.scalar(query)
        return int(number[len(day):]) if number else 0

    def next_fallback(self, day: str) -> int:
        """Add one to the day's fallback counter and return it (1 for the first of the day)."""
        with database_errors(f"numbering a ticket of {day} in the database"):
            for _ in range(_MAX_ATTEMPTS):
                try:
                    with self._session_factory.begin() as session:
                        bumped = session.execute(
                            update(TicketSequence).where(TicketSequence.day == day)
                            .values(last_value=TicketSequence.last_value + 1)
                        )
                        if bumped.rowcount == 1:
                            return session.scalar(select(TicketSequence.last_value).where(TicketSequence.day == day))
                        session.add(TicketSequence(day=day, last_value=1))
                        session.flush()
                        return 1
                except sa_exc.IntegrityError:
                    continue  # another process created the day's row first; bump it instead
            raise StorageError(f"could not number a ticket of {day} in the database; retry later")
