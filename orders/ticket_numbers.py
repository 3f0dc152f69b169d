"""Ticket numbers a citizen can key in on a phone: the local date and a daily sequence, digits only.

``2026112800042`` is the 42nd ticket of 28 November 2026 (hotline time, Asia/Shanghai by default).

Where the sequence comes from:

* Normally Redis: an INCR on ``<prefix>ticket-seq:YYYYMMDD`` (kept a few days). INCR only runs on a key
  that exists (a Lua script checks); a missing key (a new day, or a Redis that lost its data) is first
  seeded from the highest number of that day in the database, with SET NX so that one seed wins. When
  the database already holds numbers for the day, the seed skips ``reseed_gap`` numbers ahead: numbers
  handed out just before Redis lost its data may belong to tickets not written yet.
* While Redis is unreachable: a row per day in the ``ticket_sequences`` table, bumped in a transaction.
  Those numbers live in their own range, the date + ``9`` + six digits (``202611289000001``, 15 digits),
  because neither counter can see the other: Redis, once back, never hands out a number the database
  gave, and the other way round. The trade-offs: those numbers are two digits longer, and each one
  costs a write on one hot row (fine at a hotline's rate, a few per second).
* If neither answers, :class:`TicketNumberUnavailable`; the call must go on without a number.

After a Redis failure the allocator numbers in the database for ``redis_pause`` seconds before it tries
Redis again: a Redis client that retries (redis-py 8 retries 10 times, seconds in all) would otherwise
add that wait to every call during an outage.

Known limit: a Redis restored from an old snapshot (RDB) has a stale key, not a missing one, and may
reissue numbers; run Redis with AOF persistence. TicketStore refuses to merge two calls under one
number (SnapshotConflict), so such a clash is loud, not silent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

import redis
from sqlalchemy.orm import sessionmaker

from orders.errors import StorageError, TicketNumberUnavailable
from orders.store import TicketSequenceStore

log = logging.getLogger(__name__)

HOTLINE_TZ = ZoneInfo("Asia/Shanghai")
SEQUENCE_DIGITS = 5  # zero-padded width; the Redis sequence may grow to 6 digits on a (very) busy day
MAX_SEQUENCE = 999_999
FALLBACK_MARK = "9"
FALLBACK_DIGITS = 6
KEY_TTL_SECONDS = 4 * 24 * 3600
DEFAULT_RESEED_GAP = 1000
DEFAULT_REDIS_PAUSE = 10.0

_TICKET_NUMBER = re.compile(r"(20[0-9]{2})(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{5,7}")

# Returns the incremented value, or false when the key is missing (then it must be seeded first).
_INCR_IF_SEEDED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCR', KEYS[1])
end
return false
"""


def is_ticket_number(text: str) -> bool:
    """Whether ``text`` has the shape of a ticket number (for digits keyed in at the IVR)."""
    return isinstance(text, str) and _TICKET_NUMBER.fullmatch(text) is not None


class TicketNumberAllocator:
    """Hands out ticket numbers; safe across threads, processes and hosts sharing Redis and the database."""

    def __init__(
        self,
        redis_client: redis.Redis,
        session_factory: sessionmaker,
        key_prefix: str = "hotline:",
        tz: tzinfo = HOTLINE_TZ,
        reseed_gap: int = DEFAULT_RESEED_GAP,
        redis_pause: float = DEFAULT_REDIS_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis_client
        self._redis_pause = redis_pause
        self._clock = clock
        self._redis_retry_at = float("-inf")
        self._sequences = TicketSequenceStore(session_factory)
        self._key_prefix = key_prefix
        self._tz = tz
        self._reseed_gap = reseed_gap
        self._incr_if_seeded = redis_client.register_script(_INCR_IF_SEEDED)

    def key(self, day: str) -> str:
        return f"{self._key_prefix}ticket-seq:{day}"

    def day_of(self, now: datetime) -> str:
        """The hotline-local date of ``now`` (which must carry a time zone), as YYYYMMDD."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the time given to the ticket number allocator must carry a time zone")
        return now.astimezone(self._tz).strftime("%Y%m%d")

    def next(self, now: datetime) -> str:
        """A new ticket number for a ticket opened at ``now``."""
        day = self.day_of(now)
        if self._clock() < self._redis_retry_at:
            return self._next_from_database(day)
        try:
            sequence = self._next_from_redis(day)
        except redis.RedisError as exc:
            self._redis_retry_at = self._clock() + self._redis_pause
            log.warning("ticket numbers: Redis unavailable (%s), numbering in the database for %.0f s",
                        type(exc).__name__, self._redis_pause)
        except StorageError as exc:
            log.warning("ticket numbers: cannot seed the Redis counter (%s), numbering in the database", exc)
        else:
            if sequence is not None and sequence <= MAX_SEQUENCE:
                return f"{day}{sequence:0{SEQUENCE_DIGITS}d}"
            log.error("ticket numbers: no usable Redis sequence for %s, numbering in the database", day)
        return self._next_from_database(day)

    def _next_from_redis(self, day: str) -> int | None:
        key = self.key(day)
        for _ in range(10):
            value = self._incr_if_seeded(keys=[key])
            if value is not None:
                return int(value)
            highest = self._sequences.highest_sequence(day, len(str(MAX_SEQUENCE)))
            seed = highest + self._reseed_gap if highest else 0
            if self._redis.set(key, seed, nx=True, ex=KEY_TTL_SECONDS):
                log.info("ticket numbers: counter for %s seeded at %d", day, seed)
        return None  # the key vanished again and again: something else deletes it

    def _next_from_database(self, day: str) -> str:
        try:
            sequence = self._sequences.next_fallback(day)
        except StorageError as exc:
            raise TicketNumberUnavailable(
                f"no ticket number for {day}: Redis and the database are both unavailable ({exc})"
            ) from None
        if sequence > 10**FALLBACK_DIGITS - 1:
            raise TicketNumberUnavailable(f"the database ticket counter of {day} is exhausted")
        return f"{day}{FALLBACK_MARK}{sequence:0{FALLBACK_DIGITS}d}"
