"""TicketWriter: what the call handler calls to save a ticket; it never loses one and never blocks a call
on a database that is down.

1. Save in the database (TicketStore.save): ``saved``.
2. Failing that, hand the snapshot to a durable queue (an RQ job that retries, jobs.tickets): ``deferred``.
3. Failing that too (Redis down), append it to a spool file on local disk: ``spooled``; ``replay_spool``
   (run it periodically and at start-up) moves spooled snapshots on once something answers again.

Any database error defers, not only StorageUnavailable: an unexpected error (a bug, a number clash) then
waits in the job queue, and ends in RQ's failed-job registry if it never heals, where an operator sees it.
If the disk refuses the spool line as well, TicketNotKept is raised: the only case where the caller of
``save`` must do something (log loudly; the call itself still routes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from orders.errors import InvalidSnapshot, StorageUnavailable, TicketNotKept, safe_error_text
from orders.snapshot import TicketSnapshot
from orders.spool import SnapshotSpool
from orders.store import TicketStore

log = logging.getLogger(__name__)

Enqueue = Callable[[dict[str, Any]], Any]


class WriteOutcome(str, Enum):
    saved = "saved"
    deferred = "deferred"
    spooled = "spooled"


class TicketWriter:
    """Saves snapshots through ``store``; ``enqueue(data)`` must durably queue a snapshot dict for a retry
    (jobs.tickets.make_enqueue) or raise; ``spool_path`` is the last-resort file."""

    def __init__(self, store: TicketStore, enqueue: Enqueue, spool_path: str | os.PathLike[str]) -> None:
        self.store = store
        self.enqueue = enqueue
        self.spool = SnapshotSpool(spool_path)

    def save(self, snapshot: TicketSnapshot) -> WriteOutcome:
        """Save now, or keep the snapshot for later. Returns how (a str enum: "saved", ...)."""
        try:
            self.store.save(snapshot)
            return WriteOutcome.saved
        except StorageUnavailable as exc:
            log.warning("ticket %s revision %d not saved now: %s", snapshot.number, snapshot.revision, exc)
        except Exception as exc:
            log.error("ticket %s revision %d not saved: %s; keeping it for a retry",
                      snapshot.number, snapshot.revision, safe_error_text(exc))
        data = snapshot.to_dict()
        if self._enqueue(data, snapshot.number, snapshot.revision):
            return WriteOutcome.deferred
        try:
            self.spool.append(data)
        except OSError as exc:
            raise TicketNotKept(
                f"ticket {snapshot.number} revision {snapshot.revision} could not be saved, queued or spooled "
                f"({exc.strerror or type(exc).__name__} on {self.spool.path})"
            ) from None
        log.warning("ticket %s revision %d spooled to %s", snapshot.number, snapshot.revision, self.spool.path)
        return WriteOutcome.spooled

    def _enqueue(self, data: dict[str, Any], number: str, revision: int) -> bool:
        try:
            self.enqueue(data)
        except Exception as exc:
            log.warning("ticket %s revision %d could not be queued for a retry: %s",
                        number, revision, safe_error_text(exc))
            return False
        log.info("ticket %s revision %d queued for a retry", number, revision)
        return True

    def replay_spool(self) -> tuple[int, int]:
        """Save or queue the spooled snapshots, oldest first; returns (handled, still spooled).

        A line that is not a valid snapshot is moved to ``<spool>.rejected`` for an operator to read,
        never dropped.
        """
        rejected = SnapshotSpool(Path(str(self.spool.path) + ".rejected"))

        def handle(data: dict[str, Any] | None, line: str) -> bool:
            try:
                snapshot = TicketSnapshot.from_dict(data)
            except InvalidSnapshot as exc:
                log.error("spooled line is not a ticket snapshot (%s); moved to %s", exc, rejected.path)
                rejected.append({"line": line, "error": str(exc)})
                return True
            try:
                self.store.save(snapshot)
                return True
            except StorageUnavailable:
                pass
            except Exception as exc:
                log.error("spooled ticket %s revision %d not saved: %s; keeping it for a retry",
                          snapshot.number, snapshot.revision, safe_error_text(exc))
            return self._enqueue(data, snapshot.number, snapshot.revision)

        handled, kept = self.spool.replay(handle)
        if handled or kept:
            log.info("ticket spool replayed: %d handled, %d still spooled", handled, kept)
        return handled, kept


def spool_path_for(data_dir: str | os.PathLike[str]) -> Path:
    """Where the ticket spool lives under a data dir (Settings.data_dir)."""
    return Path(data_dir) / "spool" / "tickets.jsonl"
