"""The pool of virtual numbers: added, reserved (drained), removed; and its figures.

Draining and removing take the number's row lock (an UPDATE, or SELECT ... FOR UPDATE), as the allocator
does when it binds on a number: a number cannot be removed while a binding on it is being made. After each
change the cache forgets the refusals it kept for that number (a new generation: virtual_numbers.cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from base import metrics
from orders.caller import mask
from orders.store import database_errors
from virtual_numbers.cache import BindingCache
from virtual_numbers.errors import NumberInUse, UnknownNumber
from virtual_numbers.models import Binding, VirtualNumber
from virtual_numbers.parties import require_pool_e164
from virtual_numbers.views import ACTIVE, EXTENSION, REMOVED, RESERVED, NumberView, PoolFigures

log = logging.getLogger(__name__)

_NUMBERS = metrics.gauge("hotline_virtual_numbers", "Virtual numbers of the pool by use (in_use, free, reserved)",
                         ["use"])
_LIVE = metrics.gauge("hotline_virtual_bindings_live", "Live bindings on virtual numbers")


class Pool:
    """The numbers bindings are made on. A number not in the pool is shown masked in errors: it may be anyone's."""

    def __init__(self, session_factory: sessionmaker, cache: BindingCache, *, region: str,
                 clock: Callable[[], datetime]) -> None:
        self._session_factory = session_factory
        self._cache = cache
        self._region = region
        self._clock = clock

    def add_number(self, number: str) -> NumberView:
        """Add a number, or make a reserved or removed one active again."""
        e164 = require_pool_e164(number, self._region)
        with database_errors(f"adding {e164} to the pool"), self._session_factory.begin() as session:
            row = session.scalars(select(VirtualNumber).where(VirtualNumber.number == e164)).one_or_none()
            if row is None:
                session.add(VirtualNumber(number=e164, state=ACTIVE, added_at=self._clock()))
            elif row.state != ACTIVE:
                row.state = ACTIVE
        self._cache.numbers_changed([e164])
        log.info("virtual numbers: %s is active", e164)
        return self.number(e164)

    def reserve(self, number: str) -> NumberView:
        """Drain a number: no new binding on it; its live bindings go on until they end."""
        e164 = require_pool_e164(number, self._region)
        with database_errors(f"reserving {e164}"), self._session_factory.begin() as session:
            done = session.execute(update(VirtualNumber).where(VirtualNumber.number == e164,
                                                               VirtualNumber.state != REMOVED)
                                   .values(state=RESERVED)).rowcount
        if not done:
            raise UnknownNumber(f"{mask(e164)} is not in the pool")
        self._cache.numbers_changed([e164])
        log.info("virtual numbers: %s is reserved (draining)", e164)
        return self.number(e164)

    def remove(self, number: str) -> NumberView:
        """Take a number out of the pool; refused while it carries a live binding."""
        e164 = require_pool_e164(number, self._region)
        with database_errors(f"removing {e164}"), self._session_factory.begin() as session:
            row = session.scalars(select(VirtualNumber).where(VirtualNumber.number == e164,
                                                              VirtualNumber.state != REMOVED)
                                  .with_for_update()).one_or_none()
            if row is None:
                raise UnknownNumber(f"{mask(e164)} is not in the pool")
            live = session.scalar(select(func.count()).select_from(Binding)
                                  .where(Binding.virtual_number_id == row.id, Binding.ended_at.is_(None)))
            if live:
                raise NumberInUse(f"{e164} still carries {live} live binding(s): reserve it so that no new one "
                                  f"comes, and remove it once they have ended")
            row.state = REMOVED
        self._cache.numbers_changed([e164])
        log.info("virtual numbers: %s is removed", e164)
        return self.number(e164)

    def number(self, number: str) -> NumberView:
        e164 = require_pool_e164(number, self._region)
        with database_errors(f"reading {e164}"), self._session_factory() as session:
            row = session.scalars(select(VirtualNumber).where(VirtualNumber.number == e164)).one_or_none()
            if row is None:
                raise UnknownNumber(f"{mask(e164)} is not in the pool")
            live = session.scalar(select(func.count()).select_from(Binding)
                                  .where(Binding.virtual_number_id == row.id, Binding.ended_at.is_(None)))
            return NumberView(row.number, row.state, row.added_at, live)

    def numbers(self, include_removed: bool = False) -> list[NumberView]:
        live = _live_counts()
        query = (select(VirtualNumber, func.coalesce(live.c.n, 0))
                 .outerjoin(live, live.c.virtual_number_id == VirtualNumber.id).order_by(VirtualNumber.number))
        if not include_removed:
            query = query.where(VirtualNumber.state != REMOVED)
        with database_errors("listing the pool"), self._session_factory() as session:
            return [NumberView(row.number, row.state, row.added_at, n) for row, n in session.execute(query)]

    def figures(self) -> PoolFigures:
        """The pool's figures now; also sets the pool gauges (a job or the metrics endpoint calls this)."""
        live = _live_counts()
        with database_errors("counting the pool"), self._session_factory() as session:
            rows = session.execute(select(VirtualNumber.state, func.coalesce(live.c.n, 0))
                                   .outerjoin(live, live.c.virtual_number_id == VirtualNumber.id)
                                   .where(VirtualNumber.state != REMOVED)).all()
            extensions = session.scalar(select(func.count()).select_from(Binding)
                                        .where(Binding.ended_at.is_(None), Binding.mode == EXTENSION))
        figures = PoolFigures(
            active=sum(state == ACTIVE for state, _ in rows),
            reserved=sum(state == RESERVED for state, _ in rows),
            in_use=sum(n > 0 for _, n in rows),
            free=sum(state == ACTIVE and n == 0 for state, n in rows),
            live_bindings=sum(n for _, n in rows),
            extension_bindings=extensions or 0,
        )
        _NUMBERS.labels("in_use").set(figures.in_use)
        _NUMBERS.labels("free").set(figures.free)
        _NUMBERS.labels("reserved").set(figures.reserved)
        _LIVE.set(figures.live_bindings)
        return figures


def _live_counts():
    """Live bindings per virtual number, as a subquery (virtual_number_id, n)."""
    return (select(Binding.virtual_number_id, func.count().label("n")).where(Binding.ended_at.is_(None))
            .group_by(Binding.virtual_number_id).subquery())
