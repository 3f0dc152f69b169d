"""Receipts: every resolution recorded once per call id (resolution_records, masked numbers only).

A later resolution of the same call replaces only an ``extension_required`` record (the caller keyed the
extension); any other first record stays. Writes are upserts under that rule, so writing a receipt twice,
or two receipts of one call in either order, leaves the same record (but for its ``started_at``).

Two ways to write them (ReceiptWriter):

* Without a spool (``spool_path`` None: the CLI, tests): on the call's thread, as part of the resolution.
  If the database refuses, the answer still stands and the failure is logged and counted.
* With a spool: off the call path. A resolution appends its receipt to this process's in-memory queue
  (bounded: ``queue_size``) and returns; a background thread writes what has queued every ``interval``
  seconds (or as soon as ``batch`` wait), in batches of ``batch``: one statement and one commit each.
  When the database fails (or the breaker keeps it out for ``db_pause`` seconds after a failure), or the
  queue is full, receipts go to the spool: a file on the local disk, one fsync'd line per batch, under a
  lock shared by the processes of the host (orders.spool, as tickets do, see orders.writer). The thread
  replays the spool every ``replay_interval`` seconds while it holds anything; ``Broker.replay_receipts``
  does it on demand (the worker, so that a spool left by a process that exited is emptied too).
  Closing (``Broker.close``; the interpreter's exit too, but not ``os._exit``) writes what is queued, or
  spools it.

  What a process killed outright (SIGKILL, a crash) loses: the receipts it had queued and not yet written
  or spooled: normally those of its last ``interval`` (0.1 s by default) and the batch being written; at
  most ``queue_size`` if the database has fallen that far behind. The spool's promise covers a receipt
  from the moment it is spooled (fsync'd). A receipt the database will never take (an error other than
  unavailability, alone in its batch) goes to ``<spool>.rejected`` for an operator, never dropped.

Reading (``receipts``, ``record_call``) writes this process's queued receipts first; another process's
reach the database within its ``interval``.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import sessionmaker

from base import metrics
from orders import spool as spool_verdicts
from orders.errors import StorageError, StorageUnavailable
from orders.spool import SnapshotSpool
from orders.store import database_errors
from orders.writer import CircuitBreaker
from virtual_numbers.errors import InvalidRequest, ReceiptNotFound
from virtual_numbers.models import Binding, ResolutionRecord
from virtual_numbers.views import EXTENSION_REQUIRED, HANGUP_BY, Receipt

log = logging.getLogger(__name__)

_NOT_AUDITED = metrics.counter("hotline_virtual_audit_failures_total", "Resolutions whose record could not be written")
_RECEIPTS = metrics.counter("hotline_virtual_receipts_total",
                            "Receipts of resolutions by how they were kept (written, spooled, rejected, lost)",
                            ["how"])

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CALL_ID_MAX = 64
FIELDS = ("call_id", "binding_id", "virtual_number", "caller_masked", "callee_masked", "direction", "outcome",
          "started_at")
_REPLACED = FIELDS[1:-1]  # what a final answer replaces in an extension_required record

DEFAULT_BATCH = 500
DEFAULT_INTERVAL = 0.1  # bench: 20 ms gave p99 1.95-2.19 ms at 11k/s on 2 cores, 100 ms 1.61-1.66 ms
DEFAULT_QUEUE_SIZE = 20_000
DEFAULT_REPLAY_INTERVAL = 2.0
DEFAULT_CLOSE_TIMEOUT = 5.0

# PostgreSQL: a whole batch in one statement, as one JSON parameter (parsed by the server: no per-row
# round trip or client-side adaptation).
_UPSERT_JSON = text(
    f"INSERT INTO {ResolutionRecord.__tablename__} ({', '.join(FIELDS)}) "
    f"SELECT {', '.join(FIELDS)} FROM json_to_recordset(CAST(:rows AS json)) AS r(call_id varchar, "
    "binding_id integer, virtual_number varchar, caller_masked varchar, callee_masked varchar, direction varchar, "
    "outcome varchar, started_at timestamptz) "
    f"ON CONFLICT (call_id) DO UPDATE SET {', '.join(f'{f} = excluded.{f}' for f in _REPLACED)} "
    f"WHERE {ResolutionRecord.__tablename__}.outcome = '{EXTENSION_REQUIRED}'")


def call_id_of(call_id: object) -> str:
    """The call id a receipt is kept under: control characters dropped, at most CALL_ID_MAX characters; a
    new random one when none is usable."""
    text_ = _CONTROL.sub("", call_id).strip()[:CALL_ID_MAX] if isinstance(call_id, str) else ""
    return text_ or os.urandom(16).hex()  # as random as uuid4().hex, for a tenth of its cost


def merged(rows: Iterable[dict]) -> list[dict]:
    """One receipt per call id, as writing them in this order would leave it (the first, unless it is an
    ``extension_required`` one: a later one then replaces all but its ``started_at``)."""
    out: dict[str, dict] = {}
    for row in rows:
        kept = out.get(row["call_id"])
        if kept is None:
            out[row["call_id"]] = row
        elif kept["outcome"] == EXTENSION_REQUIRED:
            out[row["call_id"]] = dict(row, started_at=kept["started_at"])
    return list(out.values())


def write_receipts(session_factory: sessionmaker, rows: list[dict]) -> None:
    """Upsert receipts (one per call id: see ``merged``) in one transaction. Raises StorageUnavailable or
    StorageError."""
    if not rows:
        return
    with database_errors(f"recording {len(rows)} call(s)"), session_factory.begin() as session:
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(_UPSERT_JSON, {"rows": json.dumps(rows, default=_iso, separators=(",", ":"))})
        elif dialect == "sqlite":
            statement = sqlite_insert(ResolutionRecord)
            session.execute(statement.on_conflict_do_update(
                index_elements=["call_id"], set_={f: getattr(statement.excluded, f) for f in _REPLACED},
                where=ResolutionRecord.outcome == EXTENSION_REQUIRED), rows)
        else:
            for row in rows:
                record = session.scalars(select(ResolutionRecord)
                                         .where(ResolutionRecord.call_id == row["call_id"])).one_or_none()
                if record is None:
                    session.add(ResolutionRecord(**row))
                elif record.outcome == EXTENSION_REQUIRED:
                    for key in _REPLACED:
                        setattr(record, key, row[key])


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a receipt")


def _to_line(row: dict) -> dict:
    return dict(row, started_at=row["started_at"].isoformat())


def _from_line(data: object) -> dict:
    """A spooled receipt back as a row; raises ValueError if it is not one."""
    if not isinstance(data, dict) or set(data) != set(FIELDS) or not isinstance(data["call_id"], str) \
            or not isinstance(data["outcome"], str):
        raise ValueError("not a receipt")
    started_at = datetime.fromisoformat(data["started_at"])
    if started_at.tzinfo is None:
        raise ValueError("a receipt's time without a time zone")
    return dict(data, started_at=started_at)


class ReceiptWriter:
    """Writes receipts: on the call's thread without ``spool_path``, else in batches off the call path
    (see the module's docstring)."""

    def __init__(self, session_factory: sessionmaker, spool_path: str | os.PathLike[str] | None = None, *,
                 batch: int = DEFAULT_BATCH, interval: float = DEFAULT_INTERVAL, queue_size: int = DEFAULT_QUEUE_SIZE,
                 db_pause: float = 5.0, replay_interval: float = DEFAULT_REPLAY_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._session_factory = session_factory
        self.spool = SnapshotSpool(spool_path) if spool_path is not None else None
        self.rejected = SnapshotSpool(Path(str(spool_path) + ".rejected")) if spool_path is not None else None
        self.batch = max(1, int(batch))
        self.interval = max(0.001, float(interval))
        self.queue_size = max(1, int(queue_size))
        self.replay_interval = max(0.01, float(replay_interval))
        self.breaker = CircuitBreaker(db_pause, monotonic)
        self._monotonic = monotonic
        self._queue: collections.deque[dict] = collections.deque()
        self._reset_threading()

    def _reset_threading(self) -> None:
        self._pid = os.getpid()
        self._write_lock = threading.Lock()  # one writer at a time: receipts reach the database in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_replay = 0.0

    @property
    def batched(self) -> bool:
        """Receipts are written off the call path (a spool is configured)."""
        return self.spool is not None

    # -- the call path -----------------------------------------------------------------------------

    def record(self, row: dict, *, now: bool = False) -> None:
        """Keep one receipt (``FIELDS``). ``now``: written before this returns (or spooled), for a call whose
        outgoing leg may look for it at once. Never raises."""
        if self._pid != os.getpid():
            self._forked()
        if self.spool is None:
            self._write_unspooled(row)
            return
        if now or self._closed:
            self._queue.append(row)
            self.flush()
            return
        if len(self._queue) >= self.queue_size:
            self._keep([row], "the queue of receipts is full")
            return
        self._queue.append(row)
        if self._thread is None:
            self._start()
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _write_unspooled(self, row: dict) -> None:
        try:
            write_receipts(self._session_factory, [row])
        except StorageError as exc:
            _NOT_AUDITED.inc()
            _RECEIPTS.labels("lost").inc()
            log.error("virtual numbers: call %s (%s) was not recorded: %s", row["call_id"], row["outcome"], exc)
        else:
            _RECEIPTS.labels("written").inc()

    # -- writing -----------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write (or spool) every receipt this process has queued, on this thread; returns how many."""
        if self._pid != os.getpid():
            self._forked()
        done = 0
        with self._write_lock:
            while self._queue:
                done += self._write_batch()
        return done

    def _write_batch(self) -> int:  # with self._write_lock held
        batch = []
        queue = self._queue
        while queue and len(batch) < self.batch:
            batch.append(queue.popleft())
        if batch:
            self._write(batch)
        return len(batch)

    def pending(self) -> int:
        """Receipts queued in this process's memory."""
        return len(self._queue)

    def _write(self, batch: list[dict]) -> None:
        """Write one batch, or spool it: never raises, never drops a receipt silently."""
        rows = merged(batch)
        if not self.breaker.allow():
            self._keep(rows, "the database is unavailable")
            return
        try:
            write_receipts(self._session_factory, rows)
        except StorageUnavailable as exc:
            self._database_failed(exc)
            self._keep(rows, "the database is unavailable")
            return
        except StorageError:
            self._write_one_by_one(rows)
            return
        except Exception:  # noqa: BLE001 - a bug must not cost receipts: keep them for a replay
            log.exception("virtual numbers: writing %d receipt(s) failed unexpectedly", len(rows))
            self._keep(rows, "writing them failed")
            return
        self._database_answered()
        _RECEIPTS.labels("written").inc(len(rows))

    def _write_one_by_one(self, rows: list[dict]) -> None:
        for row in rows:
            try:
                write_receipts(self._session_factory, [row])
            except StorageUnavailable as exc:
                self._database_failed(exc)
                self._keep([row], "the database is unavailable")
            except StorageError as exc:
                self._reject([_to_line(row)], str(exc))
            else:
                _RECEIPTS.labels("written").inc()

    def _database_failed(self, exc: StorageUnavailable) -> None:
        if self.breaker.failed():
            log.warning("virtual numbers: the database is unavailable (%s); receipts go to the spool for %.0f s, "
                        "then one batch tries again", exc, self.breaker.pause)

    def _database_answered(self) -> None:
        if self.breaker.succeeded():
            log.info("virtual numbers: the database answers again; receipts are written directly")

    def _keep(self, rows: list[dict], why: str) -> None:
        """Spool receipts (one line, one fsync); if the disk refuses too, they are lost: say so loudly."""
        try:
            self.spool.append({"receipts": [_to_line(row) for row in rows]})
        except OSError as exc:
            _NOT_AUDITED.inc(len(rows))
            _RECEIPTS.labels("lost").inc(len(rows))
            log.error("virtual numbers: %d receipt(s) LOST: %s, and the spool %s refused them (%s)", len(rows), why,
                      self.spool.path, exc.strerror or type(exc).__name__)
            return
        _RECEIPTS.labels("spooled").inc(len(rows))
        log.warning("virtual numbers: %d receipt(s) spooled to %s: %s", len(rows), self.spool.path, why)

    def _reject(self, lines: list[dict], error: str) -> bool:
        try:
            self.rejected.append({"receipts": lines, "error": error})
        except OSError as exc:
            log.error("virtual numbers: %d receipt(s) could not be set aside (%s)", len(lines), exc.strerror)
            return False
        _RECEIPTS.labels("rejected").inc(len(lines))
        log.error("virtual numbers: %d receipt(s) cannot be written (%s); moved to %s for an operator", len(lines),
                  error, self.rejected.path)
        return True

    # -- the background thread ---------------------------------------------------------------------

    def _start(self) -> None:
        with self._write_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="virtual-receipts", daemon=True)
            self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    def _run(self) -> None:
        """Every ``interval`` (sooner when a full batch waits), one batch: a transaction costs far more than
        a row, so receipts that arrive while one is written wait for the next round, not a batch of their own."""
        while not self._stop.is_set():
            if len(self._queue) < self.batch:
                self._wake.wait(self.interval)
                self._wake.clear()
            try:
                with self._write_lock:
                    self._write_batch()
                if self._monotonic() >= self._next_replay:
                    self._next_replay = self._monotonic() + self.replay_interval
                    if self.spool.has_pending():
                        self.replay_spool()
            except Exception:  # noqa: BLE001 - the thread must go on; the receipts stay queued or spooled
                log.exception("virtual numbers: the receipt writer failed; trying again")

    def _forked(self) -> None:
        """In a forked child: the parent's thread and locks are not ours; its queue is the parent's to write."""
        self._queue = collections.deque()
        self._reset_threading()

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> int:
        """Stop the thread; write what is queued (or spool it); later receipts are written at once.
        Returns how many were still queued."""
        if self._pid != os.getpid():
            self._forked()
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))
        return self.flush()

    # -- the spool ---------------------------------------------------------------------------------

    def replay_spool(self) -> tuple[int, int]:
        """Write the spooled receipts, oldest first; returns (lines handled, lines still spooled). A
        database still unavailable stops the replay; a line that is not receipts goes to ``.rejected``."""
        if self.spool is None:
            return 0, 0

        def handle(data, line: str) -> str:
            try:
                rows = [_from_line(item) for item in (data or {}).get("receipts")]
            except (TypeError, ValueError, AttributeError) as exc:
                return spool_verdicts.DONE if self._reject([{"line": line}], f"not receipts: {exc}") \
                    else spool_verdicts.KEEP
            try:
                write_receipts(self._session_factory, merged(rows))
            except StorageUnavailable:
                self.breaker.failed()
                return spool_verdicts.STOP
            except StorageError:
                for row in rows:
                    try:
                        write_receipts(self._session_factory, [row])
                    except StorageUnavailable:
                        self.breaker.failed()
                        return spool_verdicts.STOP  # those written are written again later: harmless
                    except StorageError as exc:
                        if not self._reject([_to_line(row)], str(exc)):
                            return spool_verdicts.KEEP
                    else:
                        _RECEIPTS.labels("written").inc()
                self._database_answered()
                return spool_verdicts.DONE
            self._database_answered()
            _RECEIPTS.labels("written").inc(len(rows))
            return spool_verdicts.DONE

        handled, kept = self.spool.replay(handle)
        if handled or kept:
            log.info("virtual numbers: receipt spool replayed: %d batch(es) written, %d still spooled", handled, kept)
        return handled, kept


def _close_at_exit(ref: weakref.ref) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.close(timeout=1.0)
        except Exception:  # pragma: no cover - the interpreter is going away
            pass


# -- reading ----------------------------------------------------------------------------------------------

_LIST = (select(ResolutionRecord, Binding.ticket_number, Binding.department)
         .outerjoin(Binding, Binding.id == ResolutionRecord.binding_id))


def record_call(session_factory: sessionmaker, call_id: str, answered_at: datetime | None = None,
                ended_at: datetime | None = None, hangup_by: str | None = None) -> Receipt:
    """Complete a call's receipt with what the switch reports (given fields only)."""
    changes = {}
    for name, value in (("answered_at", answered_at), ("ended_at", ended_at)):
        if value is not None:
            if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
                raise InvalidRequest(f"{name} must be a datetime with a time zone")
            changes[name] = value
    if hangup_by is not None:
        if hangup_by not in HANGUP_BY:
            raise InvalidRequest(f"hangup_by must be one of {', '.join(HANGUP_BY)}")
        changes["hangup_by"] = hangup_by
    call_id = call_id_of(call_id)
    with database_errors(f"recording call {call_id}"), session_factory.begin() as session:
        if changes:
            session.execute(update(ResolutionRecord).where(ResolutionRecord.call_id == call_id).values(**changes))
        row = session.execute(_LIST.where(ResolutionRecord.call_id == call_id)).one_or_none()
    if row is None:
        raise ReceiptNotFound(f"no call {call_id} was resolved")
    return _receipt(row)


def list_receipts(session_factory: sessionmaker, department: str | None = None, ticket_number: str | None = None,
                  limit: int = 100) -> list[Receipt]:
    """Newest first; a department sees its bindings' calls only (refusals with no binding: nobody's but
    a supervisor's, who passes no department)."""
    query = _LIST.order_by(ResolutionRecord.started_at.desc(), ResolutionRecord.id.desc()).limit(
        max(1, min(int(limit), 1000)))
    if department is not None:
        query = query.where(Binding.department == department)
    if ticket_number is not None:
        query = query.where(Binding.ticket_number == ticket_number)
    with database_errors("listing call receipts"), session_factory() as session:
        return [_receipt(row) for row in session.execute(query)]


def _receipt(row) -> Receipt:
    record, ticket_number, department = row
    return Receipt(record.call_id, record.binding_id, ticket_number, department, record.virtual_number,
                   record.caller_masked, record.callee_masked, record.direction, record.outcome, record.started_at,
                   record.answered_at, record.ended_at, record.hangup_by)
