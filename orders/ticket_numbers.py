"""Ticket numbers a citizen can key in on a phone: the local date and a daily sequence, digits only.

``2026112800042`` is the 42nd ticket of 28 November 2026 (hotline time, Asia/Shanghai by default).

Where the sequence comes from, in this order:

* Normally Redis: an INCRBY on ``<prefix>ticket-seq:YYYYMMDD`` (kept a few days), in a Lua script that
  only counts on a key that exists. Each process takes a *block* of ``block`` numbers at a time and hands
  them out itself, so Redis is asked once per block, not once per call (bench/agi_calls.py: the round
  trip cost the call path more than any other storage step). Numbers are therefore unique but not in
  the order of the calls across processes, and a process that exits leaves the rest of its block unused. A missing key (a new day, or a Redis that lost its data) is first
  seeded from the highest number of that day in the database (and the spool, and this process), with
  SET NX so that one seed wins. When numbers exist already, the seed skips ``reseed_gap`` numbers ahead:
  numbers handed out just before Redis lost its data may belong to tickets not written yet.
* While Redis is unreachable: a row per day in the ``ticket_sequences`` table, bumped in a transaction.
  Those numbers live in their own range, the date + ``9`` + six digits (``202611289000001``, 15 digits),
  because neither counter can see the other.
* While the database is unreachable too: a counter in a file on the local disk (``local_dir``, flock'd
  and fsync'd, so it survives restarts), in a range of its own per node: the date + ``8`` + the node id
  (two digits, ``node_id``) + four digits (``202611288030001`` is node 3's first). Each host that numbers
  tickets needs its own node id; processes on one host share the file. The ticket reaches the database
  later through the spool (orders.writer).
* If the disk refuses too, :class:`TicketNumberUnavailable`; the call must go on without a number.

Never twice from Redis: the allocator keeps a per-day *floor*, the highest sequence this process issued
or saw, raised from the database's highest number and the spool's highest number for the day at the
first use of a day, after any Redis error and after Redis restarted (its ``run_id`` changed: a restart
may have lost writes or restored an old state). The Lua script takes the floor: an INCR that comes out at
or below it (a Redis back from an old state, or empty and seeded too low) jumps the counter to floor +
``reseed_gap`` atomically, and the jump is logged. After a detected restart the first number must also
clear the floor by ``reseed_gap`` (numbers handed out by other processes and not written yet, their
blocks included: ``reseed_gap`` must exceed the processes' blocks together, which the defaults do by far).
Run Redis with AOF persistence all the same (hotline.redis_conn does for the embedded one).

After a Redis failure the allocator numbers without Redis for ``redis_pause`` seconds before it tries
Redis again, and after a database failure it skips the database for ``db_pause`` seconds: a Redis client
that retries, or a database that hangs, would otherwise add their wait to every call during an outage.
TicketStore refuses to merge two calls under one number (SnapshotConflict), so a clash is loud, not
silent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path

import redis
from sqlalchemy.orm import sessionmaker

from base.vocabulary import HOTLINE_TZ
from orders.errors import StorageError, StorageUnavailable, TicketNumberUnavailable
from orders.spool import SnapshotSpool
from orders.store import TicketSequenceStore

log = logging.getLogger(__name__)

SEQUENCE_DIGITS = 5  # zero-padded width; the Redis sequence may grow to 6 digits on a (very) busy day
MAX_SEQUENCE = 999_999
MAX_SEQUENCE_DIGITS = len(str(MAX_SEQUENCE))
FALLBACK_MARK = "9"
FALLBACK_DIGITS = 6
LOCAL_MARK = "8"
NODE_DIGITS = 2
LOCAL_DIGITS = 4
MAX_NODE_ID = 10**NODE_DIGITS - 1
KEY_TTL_SECONDS = 4 * 24 * 3600
DEFAULT_RESEED_GAP = 1000
DEFAULT_REDIS_PAUSE = 10.0
MAX_BLOCK = 100  # far below DEFAULT_RESEED_GAP: a block never reaches past what a reseed skips

_TICKET_NUMBER = re.compile(r"(20[0-9]{2})(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{5,7}")

# KEYS[1]: the day's counter. ARGV: floor, gap, TTL, the run_id last seen ('' for none), block size. A server
# that refuses INFO in scripts gives no run_id: restarts then go unnoticed, the floor still holds.
# Returns {status, value, run_id}: status 0 counted, 1 key missing (seed it first), 2 Redis restarted since
# the run_id given (nothing counted: raise the floor first), 3 counted but the block reached down to the
# floor, so the counter jumped to floor + gap + block - 1. value: the last number of the block taken.
_NEXT_SEQUENCE = """
local ok, info = pcall(redis.call, 'INFO', 'server')
local run_id = ''
if ok and type(info) == 'string' then
    run_id = string.match(info, 'run_id:(%x+)') or ''
end
if ARGV[4] ~= '' and ARGV[4] ~= run_id then
    return {2, 0, run_id}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {1, 0, run_id}
end
local floor = tonumber(ARGV[1])
local block = tonumber(ARGV[5])
local value = redis.call('INCRBY', KEYS[1], block)
if value - block < floor then
    value = floor + tonumber(ARGV[2]) + block - 1
    redis.call('SET', KEYS[1], value, 'EX', tonumber(ARGV[3]))
    return {3, value, run_id}
end
return {0, value, run_id}
"""
_COUNTED, _UNSEEDED, _RESTARTED, _JUMPED = 0, 1, 2, 3


def is_ticket_number(text: str) -> bool:
    """Whether ``text`` has the shape of a ticket number (for digits keyed in at the IVR)."""
    return isinstance(text, str) and _TICKET_NUMBER.fullmatch(text) is not None


class LocalTicketCounter:
    """A per-day counter in a file under ``directory`` (one small file a day), for numbering while Redis
    and the database are both unreachable. Each bump takes an exclusive ``flock`` (threads and processes
    sharing the directory), writes and fsyncs, so a number is never given twice, across restarts too.
    Raises OSError when the disk refuses, or when the file holds something that is not a count (it is then
    left alone for an operator: guessing could reissue numbers)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, day: str) -> Path:
        return self.directory / f"ticket-seq-{day}"

    def next(self, day: str) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(day)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0).strip()
            if raw and not raw.isdigit():
                raise OSError(f"{path} does not hold a count")
            value = int(raw or 0) + 1
            data = f"{value}\n".encode()
            os.pwrite(fd, data, 0)  # the count only grows: the new text is never shorter than the old
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock
        if created:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return value


class TicketNumberAllocator:
    """Hands out ticket numbers; safe across threads, processes and hosts sharing Redis and the database.

    ``spool`` (a SnapshotSpool or its path): the ticket spool, whose numbers count in the floor.
    ``local_dir``: where the local counter keeps its files (None: no local counter, so with Redis and the
    database both down no number can be given). ``node_id``: this host's two-digit id in the local range.
    ``block``: how many Redis numbers this allocator takes at a time (1: one per call, in call order).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        session_factory: sessionmaker,
        key_prefix: str = "hotline:",
        tz: tzinfo = HOTLINE_TZ,
        reseed_gap: int = DEFAULT_RESEED_GAP,
        redis_pause: float = DEFAULT_REDIS_PAUSE,
        clock: Callable[[], float] = time.monotonic,
        *,
        spool: SnapshotSpool | str | os.PathLike[str] | None = None,
        local_dir: str | os.PathLike[str] | None = None,
        node_id: int = 0,
        db_pause: float | None = None,
        block: int = 1,
    ) -> None:
        if isinstance(node_id, bool) or not isinstance(node_id, int) or not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node_id must be a whole number from 0 to {MAX_NODE_ID}, got {node_id!r}")
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= MAX_BLOCK:
            raise ValueError(f"block must be a whole number from 1 to {MAX_BLOCK}, got {block!r}")
        self._block = block
        self._held: tuple[str, int, int] | None = None  # (day, next, last) of the Redis block in hand
        self._redis = redis_client
        self._redis_pause = redis_pause
        self._db_pause = redis_pause if db_pause is None else db_pause
        self._clock = clock
        self._redis_retry_at = float("-inf")
        self._db_retry_at = float("-inf")
        self._sequences = TicketSequenceStore(session_factory)
        self._key_prefix = key_prefix
        self._tz = tz
        self._reseed_gap = reseed_gap
        self._next_sequence = redis_client.register_script(_NEXT_SEQUENCE)
        self._spool = spool if isinstance(spool, SnapshotSpool) or spool is None else SnapshotSpool(spool)
        self._local = LocalTicketCounter(local_dir) if local_dir is not None else None
        self.node_id = node_id
        self._lock = threading.Lock()
        self._floors: dict[str, int] = {}  # day -> highest sequence known to be handed out
        self._checked: set[str] = set()  # days whose floor holds the database's highest since the last doubt
        self._run_id = ""  # the Redis server's run_id when we last counted there

    def key(self, day: str) -> str:
        return f"{self._key_prefix}ticket-seq:{day}"

    def day_of(self, now: datetime) -> str:
        """The hotline-local date of ``now`` (which must carry a time zone), as YYYYMMDD."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the time given to the ticket number allocator must carry a time zone")
        return now.astimezone(self._tz).strftime("%Y%m%d")

    def floor(self, day: str) -> int:
        """The highest sequence of ``day`` this allocator knows to be handed out (0 if none)."""
        with self._lock:
            return self._floors.get(day, 0)

    def next(self, now: datetime) -> str:
        """A new ticket number for a ticket opened at ``now``."""
        day = self.day_of(now)
        with self._lock:
            held = self._held
            if held is not None and held[0] == day and held[1] <= held[2]:
                self._held = (day, held[1] + 1, held[2])
                return f"{day}{held[1]:0{SEQUENCE_DIGITS}d}"
        problems: list[str] = []
        if self._clock() < self._redis_retry_at:
            problems.append("Redis paused after a failure")
        else:
            try:
                sequence = self._next_from_redis(day)
            except redis.RedisError as exc:
                self._redis_failed()
                log.warning("ticket numbers: Redis unavailable (%s), numbering without it for %.0f s",
                            type(exc).__name__, self._redis_pause)
                problems.append(f"Redis: {type(exc).__name__}")
            except StorageError as exc:
                log.warning("ticket numbers: cannot check the Redis counter against the database (%s)", exc)
                problems.append("Redis counter unchecked")
            else:
                if sequence is not None and sequence <= MAX_SEQUENCE:
                    first = sequence - self._block + 1
                    with self._lock:  # a block another thread took meanwhile is dropped: a gap, never a repeat
                        self._held = (day, first + 1, sequence)
                    return f"{day}{first:0{SEQUENCE_DIGITS}d}"
                log.error("ticket numbers: no usable Redis sequence for %s, numbering without Redis", day)
                problems.append("no usable Redis sequence")
        number = self._next_from_database(day, problems)
        if number is not None:
            return number
        return self._next_from_local(day, problems)

    # -- Redis -------------------------------------------------------------------------------------

    def _redis_failed(self) -> None:
        self._redis_retry_at = self._clock() + self._redis_pause
        with self._lock:
            self._checked.clear()  # what Redis holds once back is in doubt: raise the floors again first

    def _next_from_redis(self, day: str) -> int | None:
        key = self.key(day)
        floor = self._checked_floor(day, need_database=False)
        margin = 0
        for _ in range(10):
            gap = max(self._reseed_gap, 1)
            status, value, run_id = self._run_script(key, floor + margin, gap)
            if status == _RESTARTED:
                log.warning("ticket numbers: Redis restarted (new run id); checking its counter for %s against "
                            "the database and the spool", day)
                self._run_id = run_id
                with self._lock:
                    self._checked.clear()
                floor = self._checked_floor(day, need_database=False)
                margin = self._reseed_gap  # numbers other processes gave and have not written yet
                continue
            self._run_id = run_id
            if status == _UNSEEDED:
                # A missing key: a new day, or a Redis that lost its data: ask the database again.
                floor = self._checked_floor(day, need_database=True, refresh=True)
                seed = floor + self._reseed_gap if floor else 0
                if self._redis.set(key, seed, nx=True, ex=KEY_TTL_SECONDS):
                    log.info("ticket numbers: counter for %s seeded at %d", day, seed)
                continue
            if status == _JUMPED:
                log.warning("ticket numbers: the Redis counter for %s came out at or below %d (Redis restarted "
                            "empty or from an old state); jumped to %d", day, floor + margin, value)
            self._saw(day, value)
            return value
        return None  # the key vanished again and again: something else deletes it

    def _run_script(self, key: str, floor: int, gap: int) -> tuple[int, int, str]:
        result = self._next_sequence(keys=[key], args=[floor, gap, KEY_TTL_SECONDS, self._run_id, self._block])
        status, value, run_id = result
        if isinstance(run_id, bytes):
            run_id = run_id.decode("ascii", "replace")
        return int(status), int(value), str(run_id)

    def _saw(self, day: str, sequence: int) -> None:
        with self._lock:
            if sequence > self._floors.get(day, 0):
                self._floors[day] = sequence

    def _checked_floor(self, day: str, need_database: bool, refresh: bool = False) -> int:
        """The day's floor, raised from the database and the spool if not done since the last doubt.

        When the database cannot say, the floor stands on what this process and the spool know; with
        ``need_database`` (seeding a counter) StorageError is raised instead.
        """
        with self._lock:
            if day in self._checked and not refresh:
                return self._floors.get(day, 0)
        highest = self._spool_highest(day)
        try:
            if self._clock() < self._db_retry_at:
                raise StorageUnavailable("the ticket database is paused after a failure")
            highest = max(highest, self._sequences.highest_sequence(day, MAX_SEQUENCE_DIGITS))
            checked = True
        except StorageError as exc:
            if isinstance(exc, StorageUnavailable):
                self._db_retry_at = max(self._db_retry_at, self._clock() + self._db_pause)
            if need_database:
                raise
            checked = False
        with self._lock:
            floor = max(self._floors.get(day, 0), highest)
            self._floors[day] = floor
            if checked:
                self._checked.add(day)
            return floor

    def _spool_highest(self, day: str) -> int:
        if self._spool is None:
            return 0
        try:
            return self._spool.highest_number(day, len(day) + MAX_SEQUENCE_DIGITS)
        except OSError as exc:
            log.warning("ticket numbers: cannot read the ticket spool (%s)", exc.strerror or type(exc).__name__)
            return 0

    # -- the database and the local counter --------------------------------------------------------

    def _next_from_database(self, day: str, problems: list[str]) -> str | None:
        if self._clock() < self._db_retry_at:
            problems.append("database paused after a failure")
            return None
        try:
            sequence = self._sequences.next_fallback(day)
        except StorageError as exc:
            if isinstance(exc, StorageUnavailable):
                self._db_retry_at = self._clock() + self._db_pause
            log.warning("ticket numbers: the database cannot number either (%s)", exc)
            problems.append(f"database: {exc}")
            return None
        if sequence > 10**FALLBACK_DIGITS - 1:
            log.error("ticket numbers: the database ticket counter of %s is exhausted", day)
            problems.append("database counter exhausted")
            return None
        return f"{day}{FALLBACK_MARK}{sequence:0{FALLBACK_DIGITS}d}"

    def _next_from_local(self, day: str, problems: list[str]) -> str:
        if self._local is None:
            raise TicketNumberUnavailable(
                f"no ticket number for {day}: Redis and the database are both unavailable ({'; '.join(problems)})"
            )
        try:
            sequence = self._local.next(day)
        except OSError as exc:
            raise TicketNumberUnavailable(
                f"no ticket number for {day}: Redis, the database and the local counter are all unavailable "
                f"({'; '.join(problems)}; local: {exc.strerror or exc})"
            ) from None
        if sequence > 10**LOCAL_DIGITS - 1:
            raise TicketNumberUnavailable(f"the local ticket counter of {day} is exhausted")
        number = f"{day}{LOCAL_MARK}{self.node_id:0{NODE_DIGITS}d}{sequence:0{LOCAL_DIGITS}d}"
        log.warning("ticket numbers: neither the Redis counter nor the database could number ticket %s; "
                    "numbered locally", number)
        return number
