"""The masking broker: the one object the front ends (FastAGI, Twilio, the API, the CLI, jobs) use.

It joins the pool (virtual_numbers.pool), making bindings (virtual_numbers.bindings) and ending them
(virtual_numbers.lifecycle), resolution (virtual_numbers.resolution) and receipts (virtual_numbers.receipts)
over one database and, optionally, one Redis for the fast lookup (virtual_numbers.cache). The database is
the truth: without Redis, or with a Redis that lost its data, every answer is the same, only slower.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from redis import Redis
from sqlalchemy.orm import sessionmaker

from virtual_numbers.bindings import Bindings
from virtual_numbers.cache import BindingCache
from virtual_numbers.errors import BindingNotFound, ReceiptNotFound
from virtual_numbers.lifecycle import Lifecycle
from virtual_numbers.lookups import refresh_cache
from virtual_numbers.pool import Pool
from virtual_numbers.receipts import ReceiptWriter, list_receipts, record_call
from virtual_numbers.resolution import Resolver
from virtual_numbers.views import (BOTH, REVOKED, TICKET_CLOSED, BindingView, NumberView, PoolFigures, Receipt,
                                   Resolution)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Broker:
    """Virtual numbers for confidential tickets.

    ``default_days_after_close``: a binding of a closed ticket lasts this long after the closing;
    ``open_binding_days``: a binding of an open ticket lasts this long, unless its closing comes first
    (:meth:`ticket_closed`); ``renew_period``: how far a call pushes the expiry of a binding renewed on use.
    ``extension_mode``: when no number fits, bind on a number with an extension of ``extension_digits``.
    ``key_prefix``, ``cache_secret``, ``cache_ttl`` (seconds), ``refusal_ttl`` (seconds a refusal is kept; 0:
    never), ``redis_pause`` (seconds without Redis after it failed): see virtual_numbers.cache.
    ``receipt_spool``: the file receipts wait in when the database will not take them; with it, receipts
    are written in batches off the call path (``receipt_options``: ReceiptWriter's batch, interval,
    queue_size, db_pause, replay_interval); without it, on the call path. See virtual_numbers.receipts.
    """

    def __init__(self, session_factory: sessionmaker, redis: Redis | None = None, *, region: str = "CN",
                 local_area_code: str | None = None, clock: Callable[[], datetime] = _utcnow,
                 default_days_after_close: int = 7, open_binding_days: int = 30,
                 renew_period: timedelta = timedelta(days=7), extension_mode: bool = True,
                 extension_digits: int = 4, key_prefix: str = "hotline:", cache_secret: bytes | str | None = None,
                 cache_ttl: int = 300, refusal_ttl: int = 30, redis_pause: float = 5.0,
                 receipt_spool: str | os.PathLike[str] | None = None, receipt_options: dict | None = None) -> None:
        self.cache = BindingCache(redis, key_prefix=key_prefix, secret=cache_secret, ttl=cache_ttl,
                                  negative_ttl=refusal_ttl, pause=redis_pause)
        self._session_factory = session_factory
        self.receipt_writer = ReceiptWriter(session_factory, receipt_spool, **(receipt_options or {}))
        self.pool = Pool(session_factory, self.cache, region=region, clock=clock)
        self.lifecycle = Lifecycle(session_factory, self.cache, clock=clock, days_after_close=default_days_after_close)
        self.bindings = Bindings(session_factory, self.cache, self.lifecycle, region=region,
                                 local_area_code=local_area_code, clock=clock, open_days=open_binding_days,
                                 extension_mode=extension_mode, extension_digits=extension_digits)
        self.resolver = Resolver(session_factory, self.cache, self.lifecycle, self.receipt_writer, region=region,
                                 local_area_code=local_area_code, clock=clock, renew_period=renew_period)

    # -- the pool -----------------------------------------------------------------------------------

    def add_number(self, number: str) -> NumberView:
        return self.pool.add_number(number)

    def reserve(self, number: str) -> NumberView:
        return self.pool.reserve(number)

    def remove(self, number: str) -> NumberView:
        return self.pool.remove(number)

    def numbers(self, include_removed: bool = False) -> list[NumberView]:
        return self.pool.numbers(include_removed)

    def figures(self) -> PoolFigures:
        return self.pool.figures()

    # -- bindings -----------------------------------------------------------------------------------

    def bind(self, ticket_number: str, citizen: str, department: str, *, department_number: str | None = None,
             direction: str = BOTH, record: bool = False, expires_at: datetime | None = None,
             renew_on_use: bool = False) -> BindingView:
        return self.bindings.bind(ticket_number, citizen, department, department_number=department_number,
                                  direction=direction, record=record, expires_at=expires_at,
                                  renew_on_use=renew_on_use)

    def binding(self, binding_id: int) -> BindingView:
        found = self.bindings.get(binding_id)
        if found is None:
            raise BindingNotFound(f"no binding {binding_id}")
        return found

    def list_bindings(self, *, ticket_number: str | None = None, department: str | None = None,
                      include_ended: bool = False, limit: int = 100) -> list[BindingView]:
        return self.bindings.list(ticket_number=ticket_number, department=department, include_ended=include_ended,
                                  limit=limit)

    def revoke(self, binding_id: int, reason: str = REVOKED) -> BindingView:
        return self.lifecycle.revoke(binding_id, reason)

    def end_for_ticket(self, ticket_number: str, reason: str = TICKET_CLOSED) -> int:
        return self.lifecycle.end_for_ticket(ticket_number, reason)

    def ticket_closed(self, ticket_number: str, closed_at: datetime | None = None) -> int:
        return self.lifecycle.ticket_closed(ticket_number, closed_at)

    def follow_closed_tickets(self) -> int:
        return self.lifecycle.follow_closed_tickets()

    def expire_due(self, now: datetime | None = None) -> int:
        return self.lifecycle.expire_due(now)

    def rebuild_cache(self) -> int:
        """Write every live binding to Redis (after Redis came back empty); returns how many."""
        return refresh_cache(self._session_factory, self.cache)

    # -- calls --------------------------------------------------------------------------------------

    def resolve(self, caller: str | None, dialled: str, extension: str | None = None,
                call_id: str | None = None) -> Resolution:
        return self.resolver.resolve(caller, dialled, extension, call_id)

    def dial_target(self, call_id: str) -> str | None:
        """The real number the outgoing leg of a call ``resolve`` just connected dials (None: none now)."""
        return self.resolver.dial_target(call_id)

    def record_call(self, call_id: str, answered_at: datetime | None = None, ended_at: datetime | None = None,
                    hangup_by: str | None = None) -> Receipt:
        """Complete a call's receipt with what the switch reports (given fields only). Raises ReceiptNotFound
        if no resolution of the call has reached the database (this process's are written first)."""
        self.receipt_writer.flush()
        try:
            return record_call(self._session_factory, call_id, answered_at, ended_at, hangup_by)
        except ReceiptNotFound:
            if not self.receipt_writer.batched:
                raise
        # Resolved by another process, whose writer may hold the receipt for up to its interval: once more.
        time.sleep(min(2 * self.receipt_writer.interval, 0.2))
        return record_call(self._session_factory, call_id, answered_at, ended_at, hangup_by)

    def receipts(self, department: str | None = None, ticket_number: str | None = None,
                 limit: int = 100) -> list[Receipt]:
        """Newest first (this process's queued receipts are written first)."""
        self.receipt_writer.flush()
        return list_receipts(self._session_factory, department, ticket_number, limit)

    def replay_receipts(self) -> tuple[int, int]:
        """Write the receipts waiting in the spool (left by the database, or by a process that exited);
        returns (spooled batches written, still spooled). The worker calls this beside expire_due."""
        return self.receipt_writer.replay_spool()

    def close(self, timeout: float = 5.0) -> int:
        """Write the receipts still queued in memory (or spool them); returns how many there were. Later
        receipts are written on the call path."""
        self.cache.close()
        return self.receipt_writer.close(timeout)
