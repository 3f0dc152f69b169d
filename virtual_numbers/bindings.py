"""Making bindings: allocating a virtual number under the reuse rule.

Allocation (see virtual_numbers.models for the tables): the active numbers on which no party of the new
binding holds a live binding are tried least-used first (ties in random order, so concurrent binds spread
out). Each try is one transaction: lock the number's row (it must still be active), insert the binding
and its party rows. The unique (virtual_number_id, party) constraint makes a concurrent winner's rows
fail ours with IntegrityError: the try is rolled back and the next number tried. When no number fits,
extension mode (if on) binds on a number where the citizen holds nothing, with a random free extension;
otherwise PoolExhausted says why. Expired bindings that still hold one of the parties are ended first.

Expiry when none is given: a closed ticket's bindings last ``days_after_close`` days after its closing
(its last move); an open ticket's last ``open_days`` days from now, and Lifecycle.ticket_closed shortens
them when it closes. Renewal on use (virtual_numbers.resolution) pushes the expiry on.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from base import metrics
from orders.caller import mask
from orders.lifecycle import OPEN
from orders.models import Department, Ticket
from orders.store import database_errors
from virtual_numbers.cache import BindingCache
from virtual_numbers.errors import InvalidParty, InvalidRequest, PoolExhausted, UnknownTicket
from virtual_numbers.lifecycle import Lifecycle
from virtual_numbers.lookups import WITH_NUMBER, cache_data, department_phones, read_binding, view
from virtual_numbers.models import Binding, BindingExtension, BindingParty, VirtualNumber
from virtual_numbers.parties import caller_e164, citizen_e164, department_party
from virtual_numbers.views import ACTIVE, BOTH, DIRECTIONS, EXTENSION, PAIR, RESERVED, BindingView

log = logging.getLogger(__name__)

_CREATED = metrics.counter("hotline_virtual_bindings_created_total", "Bindings made, by mode", ["mode"])
_EXHAUSTED = metrics.counter("hotline_virtual_pool_exhausted_total", "Bindings refused: no virtual number fitted")

_OPEN_STATUSES = frozenset(status.value for status in OPEN)
_ROUNDS = 3  # candidate lists read per allocation: each try after the first sees what the others took
_EXTENSION_TRIES = 8  # random extensions tried per number
_LOCKED_RETRIES = 20  # SQLite "database is locked" (a writer upgrading under another): wait and retry
_rng = random.SystemRandom()


class Bindings:
    def __init__(self, session_factory: sessionmaker, cache: BindingCache, lifecycle: Lifecycle, *, region: str,
                 local_area_code: str | None, clock: Callable[[], datetime], open_days: int, extension_mode: bool,
                 extension_digits: int) -> None:
        if not 2 <= extension_digits <= 8:
            raise InvalidRequest("extension_digits must be 2 to 8")
        self._session_factory = session_factory
        self._cache = cache
        self._lifecycle = lifecycle
        self._region = region
        self._local_area_code = local_area_code
        self._clock = clock
        self.open_days = open_days
        self.extension_mode = extension_mode
        self.extension_digits = extension_digits

    # -- making ------------------------------------------------------------------------------------

    def bind(self, ticket_number: str, citizen: str, department: str, *, department_number: str | None = None,
             direction: str = BOTH, record: bool = False, expires_at: datetime | None = None,
             renew_on_use: bool = False) -> BindingView:
        if direction not in DIRECTIONS:
            raise InvalidRequest(f"direction must be one of {', '.join(DIRECTIONS)}")
        citizen = citizen_e164(citizen, self._region, self._local_area_code)
        now = self._clock()
        with database_errors(f"binding ticket {ticket_number}"), self._session_factory() as session:
            expires_at = self._expiry(session, ticket_number, expires_at, now)
            number_b, phones = self._department_side(session, department, department_number)
        if citizen in phones or citizen == number_b:
            raise InvalidParty(f"the citizen's number is a phone of department {department}")
        parties = [citizen, department_party(department)] + ([number_b] if number_b else [])
        values = dict(ticket_number=ticket_number, citizen_e164=citizen, department=department,
                      department_number=number_b, direction=direction, record=bool(record), created_at=now,
                      expires_at=expires_at, renew_on_use=bool(renew_on_use))
        self._lifecycle.end_due_holding(parties, now)
        made = self._allocate_pair(parties, values)
        if made is None and self.extension_mode:
            made = self._allocate_extension(citizen, values)
        if made is None:
            _EXHAUSTED.inc()
            message = self._exhausted_message(ticket_number, department, parties)
            log.warning("virtual numbers: %s", message)
            raise PoolExhausted(message)
        binding, x = made
        # Pair keys of these callers on X may now be ambiguous (or point at an ended binding): the next
        # resolution of each reads the database, which sees every binding, and refills them. Every refusal
        # kept for X is outdated too (a new generation), now that the binding is committed.
        self._cache.put(cache_data(binding, x, phones), extension=binding.extension)
        self._cache.drop_pairs(x, [citizen] + ([number_b] if number_b else phones))
        _CREATED.labels(binding.mode).inc()
        log.info("virtual numbers: binding %d for ticket %s: %s on %s%s, department %s, until %s", binding.id,
                 ticket_number, mask(citizen), x, f" extension {binding.extension}" if binding.extension else "",
                 department, expires_at.isoformat())
        return view(binding, x)

    def _expiry(self, session: Session, ticket_number: str, expires_at: datetime | None, now: datetime) -> datetime:
        ticket = session.execute(select(Ticket.status, Ticket.updated_at)
                                 .where(Ticket.number == ticket_number)).one_or_none()
        if ticket is None:
            raise UnknownTicket(f"no ticket {ticket_number}")
        if expires_at is not None:
            if expires_at.tzinfo is None or expires_at.utcoffset() is None:
                raise InvalidRequest("expires_at must carry a time zone")
            if expires_at <= now:
                raise InvalidRequest("expires_at must be in the future")
            return expires_at
        if ticket.status in _OPEN_STATUSES:
            return now + timedelta(days=self.open_days)
        days = self._lifecycle.days_after_close
        expires_at = ticket.updated_at + timedelta(days=days)
        if expires_at <= now:
            raise InvalidRequest(f"ticket {ticket_number} closed more than {days} day(s) ago")
        return expires_at

    def _department_side(self, session: Session, code: str, number: str | None) -> tuple[str | None, list[str]]:
        """(B or None, the department's phones, first added first)."""
        department = session.execute(select(Department.id, Department.active)
                                     .where(Department.code == code)).one_or_none()
        if department is None or not department.active:
            raise InvalidParty(f"no active department {code}")
        phones = department_phones(session, code)
        if number is None:
            if not phones:
                raise InvalidParty(f"department {code} has no phone to call citizens from")
            return None, phones
        number_b = caller_e164(number, self._region, self._local_area_code)
        if number_b is None or number_b not in phones:
            raise InvalidParty(f"{mask(number if isinstance(number, str) else '')} is not a phone of department "
                               f"{code}")
        return number_b, phones

    def _allocate_pair(self, parties: list[str], values: dict) -> tuple[Binding, str] | None:
        for _ in range(_ROUNDS):
            candidates = self._candidates(select(Binding.virtual_number_id, func.count().label("n"))
                                          .where(Binding.ended_at.is_(None)),
                                          ~exists().where(BindingParty.virtual_number_id == VirtualNumber.id,
                                                          BindingParty.party.in_(parties)))
            if not candidates:
                return None
            for vn_id, x in candidates:
                made = self._try(vn_id, x, lambda session, binding: session.add_all(
                    BindingParty(virtual_number_id=vn_id, party=p, binding_id=binding.id) for p in parties),
                    dict(values, mode=PAIR, extension=None))
                if made is not None:
                    return made
        return None

    def _allocate_extension(self, citizen: str, values: dict) -> tuple[Binding, str] | None:
        low, high = 10 ** (self.extension_digits - 1), 10 ** self.extension_digits - 1
        full = (high - low + 1) // 2  # half taken: random tries start to miss; use another number
        candidates = self._candidates(select(Binding.virtual_number_id, func.count().label("n"))
                                      .where(Binding.ended_at.is_(None), Binding.mode == EXTENSION),
                                      ~exists().where(BindingParty.virtual_number_id == VirtualNumber.id,
                                                      BindingParty.party == citizen),
                                      below=full)
        for vn_id, x in candidates:
            for _ in range(_EXTENSION_TRIES):
                extension = str(_rng.randint(low, high))

                def rows(session: Session, binding: Binding) -> None:
                    session.add(BindingParty(virtual_number_id=vn_id, party=citizen, binding_id=binding.id))
                    session.add(BindingExtension(virtual_number_id=vn_id, extension=extension, binding_id=binding.id))

                made = self._try(vn_id, x, rows, dict(values, mode=EXTENSION, extension=extension))
                if made is not None:
                    return made
        return None

    def _candidates(self, usage, fits, below: int | None = None) -> list[tuple[int, str]]:
        """Active numbers where ``fits`` holds, least used first (``usage``: a count per number)."""
        usage = usage.group_by(Binding.virtual_number_id).subquery()
        query = (select(VirtualNumber.id, VirtualNumber.number, func.coalesce(usage.c.n, 0))
                 .outerjoin(usage, usage.c.virtual_number_id == VirtualNumber.id)
                 .where(VirtualNumber.state == ACTIVE, fits))
        with database_errors("choosing a virtual number"), self._session_factory() as session:
            rows = [(n, _rng.random(), vn_id, x) for vn_id, x, n in session.execute(query)
                    if below is None or n < below]
        return [(vn_id, x) for *_, vn_id, x in sorted(rows)]

    def _try(self, vn_id: int, x: str, add_rows, values: dict) -> tuple[Binding, str] | None:
        """One allocation attempt in its own transaction; None if the number was taken or drained meanwhile."""
        with database_errors(f"binding ticket {values['ticket_number']}"):
            for attempt in range(_LOCKED_RETRIES):
                try:
                    with self._session_factory.begin() as session:
                        # The row lock: draining or removing this number waits for us, and we for them.
                        held = session.execute(update(VirtualNumber).where(VirtualNumber.id == vn_id,
                                                                           VirtualNumber.state == ACTIVE)
                                               .values(state=ACTIVE)).rowcount
                        if not held:
                            return None
                        binding = Binding(virtual_number_id=vn_id, **values)
                        session.add(binding)
                        session.flush()
                        add_rows(session, binding)
                        session.flush()
                        return binding, x
                except sa_exc.IntegrityError:
                    return None  # a concurrent binding took a party (or the extension) on this number
                except sa_exc.OperationalError as exc:
                    if not _sqlite_locked(exc) or attempt + 1 == _LOCKED_RETRIES:
                        raise
                    time.sleep(0.005 * (attempt + 1))
        return None

    def _exhausted_message(self, ticket_number: str, department: str, parties: list[str]) -> str:
        with database_errors("counting the pool"), self._session_factory() as session:
            active = session.scalar(select(func.count()).select_from(VirtualNumber)
                                    .where(VirtualNumber.state == ACTIVE)) or 0
            reserved = session.scalar(select(func.count()).select_from(VirtualNumber)
                                      .where(VirtualNumber.state == RESERVED)) or 0

            def held(party: str) -> int:
                return session.scalar(select(func.count(func.distinct(BindingParty.virtual_number_id)))
                                      .join(VirtualNumber, VirtualNumber.id == BindingParty.virtual_number_id)
                                      .where(BindingParty.party == party, VirtualNumber.state == ACTIVE)) or 0

            citizen, side = held(parties[0]), held(parties[1])
            number_b = held(parties[2]) if len(parties) > 2 else None
        why = (f"no virtual number can carry a binding of ticket {ticket_number}: the pool has {active} active "
               f"number(s) ({reserved} reserved); the citizen already holds a live binding on {citizen} of them, "
               f"department {department} on {side}")
        if number_b is not None:
            why += f", its number on {number_b}"
        if not self.extension_mode:
            return why + "; extension mode is off. Add numbers to the pool or turn extension mode on"
        if citizen >= active:
            return why + "; extension mode cannot help either: the citizen holds a binding on every number"
        return why + "; extension mode found no free extension either. Add numbers to the pool"

    # -- reading -----------------------------------------------------------------------------------

    def get(self, binding_id: int) -> BindingView | None:
        return read_binding(self._session_factory, binding_id)

    def list(self, *, ticket_number: str | None = None, department: str | None = None, include_ended: bool = False,
             limit: int = 100) -> list[BindingView]:
        query = WITH_NUMBER.order_by(Binding.created_at.desc(), Binding.id.desc()).limit(max(1, min(int(limit), 1000)))
        if ticket_number is not None:
            query = query.where(Binding.ticket_number == ticket_number)
        if department is not None:
            query = query.where(Binding.department == department)
        if not include_ended:
            query = query.where(Binding.ended_at.is_(None))
        with database_errors("listing bindings"), self._session_factory() as session:
            return [view(*row) for row in session.execute(query)]


def _sqlite_locked(exc: BaseException) -> bool:
    return "locked" in str(getattr(exc, "orig", exc))
