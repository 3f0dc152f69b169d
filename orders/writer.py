"""TicketWriter: what the call handler calls to save a ticket; it never loses one and never blocks a call
on a database that is down or hung.

1. Save in the database (TicketStore.save): ``saved``.
2. Failing that, append the snapshot to the spool, a file on the local disk, fsync'd (orders.spool):
   ``spooled``. The spool is the primary deferral: it survives a Redis that loses its data and a process
   that exits, and it is replayed by every process that writes tickets (``start_replaying``).
3. Only if the disk refuses too: hand the snapshot to ``enqueue`` (an RQ job that retries, jobs.tickets):
   ``deferred``. If that fails as well, TicketNotKept is raised: the only case where the caller of
   ``save`` must do something (log loudly; the call itself still routes).

A database that fails a save as unavailable (refused, timed out: base.db bounds every wait) opens a
circuit breaker: for ``db_pause`` seconds saves go straight to the spool instead of each paying the
timeout; then one save tries the database again. The replayer thread is the other probe: its first
successful save from the spool closes the breaker.

``save_later`` hands a snapshot to the writer's own bounded worker threads and returns at once; ``close``
(on SIGTERM, at process exit) spools whatever is still pending in memory or being saved, so nothing waits
only in memory when the process goes. Saves are idempotent (highest revision wins), so a snapshot both
saved and spooled does no harm.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from orders import spool as spool_verdicts
from orders.errors import (
    InvalidSnapshot,
    SnapshotConflict,
    StorageUnavailable,
    TicketNotKept,
    safe_error_text,
)
from orders.snapshot import TicketSnapshot
from orders.spool import SnapshotSpool
from orders.store import TicketStore

log = logging.getLogger(__name__)

Enqueue = Callable[[dict[str, Any]], Any]

DEFAULT_THREADS = 4
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_DB_PAUSE = 5.0
DEFAULT_REPLAY_INTERVAL = 2.0
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_LINGER = 0.05
BATCH_SIZE = 32  # snapshots a worker thread saves in one transaction


class WriteOutcome(str, Enum):
    saved = "saved"
    spooled = "spooled"
    deferred = "deferred"  # queued as an RQ job: the disk refused the spool line


class CircuitBreaker:
    """Closed: every save tries the database. Open (after a failure): none does until ``pause`` seconds
    have passed; then one trial is let through (and the others wait another pause) until a success closes
    it. Thread-safe."""

    def __init__(self, pause: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause = pause
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def allow(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            self._open_until = now + self.pause  # this caller is the trial; the others keep out meanwhile
            return True

    def failed(self) -> bool:
        """Record a failure; True if this opened the breaker (it was closed)."""
        with self._lock:
            opened = self._open_until is None
            self._open_until = self._clock() + self.pause
            return opened

    def succeeded(self) -> bool:
        """Record a success; True if this closed the breaker (it was open)."""
        with self._lock:
            closed = self._open_until is not None
            self._open_until = None
            return closed


class TicketWriter:
    """Saves snapshots through ``store``; ``spool_path`` is the file deferred snapshots wait in;
    ``enqueue(data)`` (optional) durably queues a snapshot dict for a retry (jobs.tickets.make_enqueue) or
    raises, used only when the disk refuses the spool.

    ``threads`` and ``queue_size`` bound ``save_later``; ``linger``: how long a snapshot handed to
    ``save_later`` may wait for others to share its transaction (0: none); ``db_pause`` is the breaker's pause;
    ``on_outcome(how)`` (optional) is told how each save ended ("saved", "spooled", "deferred", "lost"),
    e.g. for a metric.
    """

    def __init__(
        self,
        store: TicketStore,
        enqueue: Enqueue | None,
        spool_path: str | os.PathLike[str],
        *,
        threads: int = DEFAULT_THREADS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        linger: float = DEFAULT_LINGER,
        db_pause: float = DEFAULT_DB_PAUSE,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[str], Any] | None = None,
    ) -> None:
        self.store = store
        self.enqueue = enqueue
        self.spool = SnapshotSpool(spool_path)
        self.rejected = SnapshotSpool(Path(str(self.spool.path) + ".rejected"))
        self.breaker = CircuitBreaker(db_pause, clock)
        self._on_outcome = on_outcome
        self._threads = max(1, threads)
        self._queue_size = max(1, queue_size)
        self._cond = threading.Condition()
        # Oldest first, one per ticket: a newer revision replaces the one still waiting (see save_later).
        self._pending: dict[str, TicketSnapshot] = {}
        self._arrived: dict[str, float] = {}  # number -> when it joined _pending (clock), for the linger
        self._linger = max(0.0, linger)
        self._clock = clock
        self._in_flight: dict[int, list[TicketSnapshot]] = {}  # per worker thread: the batch it saves
        self._numbers_in_flight: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._closed = False
        self._replayer: threading.Thread | None = None
        self._replay_stop = threading.Event()
        self._kept_failures: set[tuple[str, int]] = set()

    # -- saving now --------------------------------------------------------------------------------

    def save(self, snapshot: TicketSnapshot) -> WriteOutcome:
        """Save now, or keep the snapshot for later. Returns how (a str enum: "saved", ...).
        Raises TicketNotKept only when the database, the disk and the retry queue all refused."""
        if self.breaker.allow():
            try:
                self.store.save(snapshot)
            except StorageUnavailable as exc:
                self._database_failed(exc)
                log.warning("ticket %s revision %d not saved now: %s", snapshot.number, snapshot.revision, exc)
            except Exception as exc:
                log.error("ticket %s revision %d not saved: %s; keeping it for a retry",
                          snapshot.number, snapshot.revision, safe_error_text(exc))
            else:
                self._database_answered()
                self._report(WriteOutcome.saved)
                return WriteOutcome.saved
        how = self._keep(snapshot)
        self._report(how)
        return how

    def _database_failed(self, exc: StorageUnavailable) -> None:
        if self.breaker.failed():
            log.warning("ticket database unavailable (%s); saves go to the spool for %.0f s, then one tries again",
                        exc, self.breaker.pause)

    def _database_answered(self) -> None:
        if self.breaker.succeeded():
            log.info("ticket database answers again; saving directly")

    def _keep(self, snapshot: TicketSnapshot) -> WriteOutcome:
        """Spool ``snapshot``, or failing that queue it; raises TicketNotKept if neither works."""
        data = snapshot.to_dict()
        try:
            self.spool.append(data)
        except OSError as exc:
            spool_error = f"{exc.strerror or type(exc).__name__} on {self.spool.path}"
            log.error("ticket %s revision %d could not be spooled (%s)", snapshot.number, snapshot.revision,
                      spool_error)
        else:
            log.info("ticket %s revision %d spooled to %s", snapshot.number, snapshot.revision, self.spool.path)
            return WriteOutcome.spooled
        if self._enqueue(data, snapshot.number, snapshot.revision):
            return WriteOutcome.deferred
        raise TicketNotKept(
            f"ticket {snapshot.number} revision {snapshot.revision} could not be saved, spooled or queued "
            f"({spool_error})"
        )

    def _enqueue(self, data: dict[str, Any], number: str, revision: int) -> bool:
        if self.enqueue is None:
            return False
        try:
            self.enqueue(data)
        except Exception as exc:
            log.error("ticket %s revision %d could not be queued for a retry either: %s",
                      number, revision, safe_error_text(exc))
            return False
        log.warning("ticket %s revision %d queued for a retry (the spool refused it)", number, revision)
        return True

    def _report(self, how: WriteOutcome | str) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(str(getattr(how, "value", how)))
            except Exception:  # a metric must never cost a ticket
                log.debug("on_outcome callback failed", exc_info=True)

    # -- saving in the background ------------------------------------------------------------------

    def save_later(self, snapshot: TicketSnapshot) -> None:
        """Hand ``snapshot`` to the writer's worker threads and return at once. Never raises.

        A snapshot still waiting behind others is replaced by a newer revision of its ticket: under load
        a call's opening and closing saves become one (what the store would keep of the two is the newer,
        with ``confidential`` if either had it), and the writer catches up instead of falling behind. Two
        revisions of one ticket are never saved at once, so they never race each other's insert.

        With the in-memory queue full, or the writer closed, the snapshot is spooled (or queued) on the
        caller's thread instead.
        """
        try:
            with self._cond:
                waiting = self._pending.get(snapshot.number)
                if waiting is not None and not _same_ticket(waiting, snapshot):
                    reason = "another ticket with its number is waiting to be saved"  # the store sets it aside
                elif not self._closed and (waiting is not None or len(self._pending) < self._queue_size):
                    first = not self._pending
                    self._pending[snapshot.number] = snapshot if waiting is None else _newest(waiting, snapshot)
                    self._arrived.setdefault(snapshot.number, self._clock())
                    self._start_workers()
                    # The first snapshot starts a worker's linger; a full batch goes at once. Others wait for
                    # the linger or the batch in flight to end, which wakes a worker itself.
                    if first or len(self._pending) >= BATCH_SIZE:
                        self._cond.notify()
                    return
                else:
                    reason = "the writer is closed" if self._closed else "the save queue is full"
            log.warning("ticket %s revision %d spooled at once: %s", snapshot.number, snapshot.revision, reason)
            self._keep_or_log(snapshot)
        except Exception:
            log.exception("ticket %s revision %d: save_later failed", getattr(snapshot, "number", "?"),
                          getattr(snapshot, "revision", 0))

    def _keep_or_log(self, snapshot: TicketSnapshot) -> bool:
        try:
            how = self._keep(snapshot)
        except TicketNotKept as exc:
            log.error("%s; THE TICKET IS LOST unless the database takes it", exc)
            self._report("lost")
            return False
        self._report(how)
        return True

    def _start_workers(self) -> None:  # with self._cond held
        if self._workers:
            return
        for i in range(self._threads):
            thread = threading.Thread(target=self._work, name=f"ticket-writer-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _work(self) -> None:
        token = threading.get_ident()
        while True:
            with self._cond:
                while not ((wait := self._batch_wait()) == 0.0 and (numbers := self._ready())):
                    if self._closed and not self._pending:
                        return  # closed and nothing left
                    self._cond.wait(wait)
                batch = [self._pending.pop(number) for number in numbers]
                for number in numbers:
                    self._arrived.pop(number, None)
                self._in_flight[token] = batch
                self._numbers_in_flight.update(numbers)
            try:
                if len(batch) == 1 or not self._save_batch(batch):
                    for snapshot in batch:
                        self._save_one(snapshot)
            finally:
                with self._cond:
                    self._in_flight.pop(token, None)
                    self._numbers_in_flight.difference_update(numbers)
                    self._cond.notify_all()

    def _batch_wait(self) -> float | None:  # with self._cond held
        """0.0 when a worker should take a batch now, else how long to wait (None: until woken).

        A batch starts when a full one waits, or when none is being saved and the oldest waiting snapshot
        has lingered ``linger`` seconds (at once when closing). Snapshots that arrive meanwhile share its
        transaction: under load the batches grow (one statement per kind of write for the whole batch)
        instead of every save waking a worker for a batch of one or two, which cost the call path more
        CPU than anything else it stores (bench/agi_calls.py). The other workers join only when a full
        batch waits (a slow database).
        """
        if len(self._pending) >= BATCH_SIZE:
            return 0.0
        if self._in_flight or not self._pending:
            return None
        if self._closed or not self._linger:
            return 0.0
        left = self._arrived.get(next(iter(self._pending)), 0.0) + self._linger - self._clock()
        return 0.0 if left <= 0 else left

    def _ready(self) -> list[str]:  # with self._cond held
        """Up to BATCH_SIZE waiting tickets, oldest first, that no other worker is saving now."""
        ready = []
        for number in self._pending:
            if number not in self._numbers_in_flight:
                ready.append(number)
                if len(ready) == BATCH_SIZE:
                    break
        return ready

    def _save_batch(self, batch: list[TicketSnapshot]) -> bool:
        """Save ``batch`` in one transaction (one commit instead of one per snapshot: saves come in bursts,
        and a commit per save held SQLite to some 250 saves a second). True when done: saved, or kept for
        later because the database is unavailable; False to save them one by one (a contended or clashing
        snapshot in the batch)."""
        if not self.breaker.allow():
            for snapshot in batch:
                self._keep_or_log(snapshot)
            return True
        try:
            self.store.save_many(batch)
        except StorageUnavailable as exc:
            self._database_failed(exc)
            for snapshot in batch:
                self._keep_or_log(snapshot)
            return True
        except Exception:
            return False
        self._database_answered()
        for _ in batch:
            self._report(WriteOutcome.saved)
        return True

    def _save_one(self, snapshot: TicketSnapshot) -> None:
        try:
            self.save(snapshot)
        except TicketNotKept as exc:
            log.error("%s; THE TICKET IS LOST unless the database takes it", exc)
            self._report("lost")
        except Exception:
            log.exception("ticket %s revision %d: unexpected error while saving; spooling it",
                          snapshot.number, snapshot.revision)
            self._keep_or_log(snapshot)

    def pending(self) -> int:
        """Snapshots waiting in memory or being saved by the worker threads."""
        with self._cond:
            return len(self._pending) + sum(len(batch) for batch in self._in_flight.values())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or being saved (tests and ``hotline call`` wait on it)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def drain(self) -> int:
        """Spool every snapshot still waiting in memory or being saved right now; returns how many.

        A snapshot being saved may be saved as well: harmless, saves are idempotent.
        """
        with self._cond:
            snapshots = list(self._pending.values()) + [s for batch in self._in_flight.values() for s in batch]
            self._pending.clear()
            self._arrived.clear()
        kept = sum(1 for snapshot in snapshots if self._keep_or_log(snapshot))
        if snapshots:
            log.warning("ticket writer drained: %d snapshot(s) pending in memory spooled to %s (%d not kept)",
                        kept, self.spool.path, len(snapshots) - kept)
        return kept

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> int:
        """Stop taking work: wait up to ``timeout`` seconds for the worker threads to finish what they
        hold, then spool whatever is left (pending or still being saved); stop the replayer. Later
        ``save_later`` calls spool at once. Returns how many snapshots were spooled by the drain."""
        self._replay_stop.set()
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        return self.drain()

    # -- the spool -------------------------------------------------------------------------------

    def start_replaying(self, interval: float = DEFAULT_REPLAY_INTERVAL) -> threading.Thread:
        """Start (once) a daemon thread that replays the spool every ``interval`` seconds while it holds
        anything; ``close()`` stops it. Returns the thread."""
        with self._cond:
            if self._replayer is None or not self._replayer.is_alive():
                self._replay_stop.clear()
                self._replayer = threading.Thread(target=self._replay_every, args=(interval,), daemon=True,
                                                  name="ticket-spool-replay")
                self._replayer.start()
            return self._replayer

    def _replay_every(self, interval: float) -> None:
        wait = 0.0
        while not self._replay_stop.wait(wait):
            wait = interval
            try:
                if self.spool.has_pending():
                    self.replay_spool()
            except Exception:
                log.exception("ticket spool replay failed; trying again in %.0f s", interval)

    def replay_spool(self) -> tuple[int, int]:
        """Save the spooled snapshots in the database, oldest first; returns (handled, still spooled).

        The first save is also the breaker's probe: it closes the breaker on success, and a database still
        unavailable stops the replay (everything stays spooled). A snapshot that can never be saved (a
        number or call that belongs to another ticket) or a line that is not a snapshot is moved to
        ``<spool>.rejected`` for an operator to read, never dropped; other errors keep the line for the
        next replay and go on with the rest.
        """

        def handle(data: dict[str, Any] | None, line: str) -> str:
            try:
                snapshot = TicketSnapshot.from_dict(data)
            except InvalidSnapshot as exc:
                return self._reject(line, f"not a ticket snapshot: {exc}", "spooled line")
            try:
                self.store.save(snapshot)
            except StorageUnavailable:
                self.breaker.failed()
                return spool_verdicts.STOP
            except SnapshotConflict as exc:
                return self._reject(line, str(exc), f"spooled ticket {snapshot.number} revision {snapshot.revision}")
            except Exception as exc:
                key = (snapshot.number, snapshot.revision)
                if key not in self._kept_failures:  # once per snapshot and process: replays run every few s
                    self._kept_failures.add(key)
                    log.error("spooled ticket %s revision %d not saved: %s; kept in the spool",
                              snapshot.number, snapshot.revision, safe_error_text(exc))
                return spool_verdicts.KEEP
            if self.breaker.succeeded():
                log.info("ticket database answers again (spool replay); saving directly")
            self._kept_failures.discard((snapshot.number, snapshot.revision))
            return spool_verdicts.DONE

        handled, kept = self.spool.replay(handle)
        if handled or kept:
            log.info("ticket spool replayed: %d handled, %d still spooled", handled, kept)
        return handled, kept

    def _reject(self, line: str, error: str, what: str) -> str:
        try:
            self.rejected.append({"line": line, "error": error})
        except OSError as exc:
            log.error("%s could not be set aside (%s); kept in the spool", what, exc.strerror)
            return spool_verdicts.KEEP
        log.error("%s cannot be saved (%s); moved to %s for an operator", what, error, self.rejected.path)
        return spool_verdicts.DONE


def _same_ticket(a: TicketSnapshot, b: TicketSnapshot) -> bool:
    """Two snapshots of one ticket (not two tickets given one number, which the store refuses to merge)."""
    return a.created_at == b.created_at and a.uniqueid == b.uniqueid


def _newest(waiting: TicketSnapshot, arriving: TicketSnapshot) -> TicketSnapshot:
    """What saving both snapshots of one ticket would leave in the store (TicketStore.save)."""
    newer, older = (arriving, waiting) if arriving.revision > waiting.revision else (waiting, arriving)
    if older.confidential and not newer.confidential:  # the store never lifts confidentiality
        newer = dataclasses.replace(newer, confidential=True)
    return newer


def _drain_at_exit(ref: weakref.ref) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.drain()
        except Exception:  # pragma: no cover - the interpreter is going away
            pass


def spool_path_for(data_dir: str | os.PathLike[str]) -> Path:
    """Where the ticket spool lives under a data dir (Settings.data_dir)."""
    return Path(data_dir) / "spool" / "tickets.jsonl"
