"""The RQ side of ticket writes: a job that saves a snapshot, retried for about a day.

It is the last resort only (orders.writer): a snapshot the database would not take goes to the spool on
the local disk first, and to this queue only when the disk refuses it.

No caller number reaches RQ's logs: RQ logs a job's description, id, arguments (``extra=``) and the
traceback of a failure. So the job's arguments, description and id carry only the ticket number and
revision; the snapshot itself rides in ``job.meta`` (stored with the job, never logged); and a failure
raises an error whose message is safe (orders.errors), never the snapshot.

``hotline worker`` runs these jobs with RQ's scheduler (retries come due) and also replays its host's
spool and settles stale calls; plain ``rq worker`` would do neither, so it is not the way to run them.

A job that still fails after the last retry stays in the queue's FailedJobRegistry (kept a year) with
its error. Once the cause is fixed an operator requeues it, which is always safe (saves are idempotent)::

    rq requeue --queue hotline --all --url redis://...

or from Python: ``requeue_failed(queue)``.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import timedelta
from typing import Any

from rq import Queue, Retry, get_current_job
from rq.job import Job

from base.db import make_engine, make_session_factory
from config import load_settings
from orders.errors import InvalidSnapshot
from orders.snapshot import TicketSnapshot
from orders.store import TicketStore

log = logging.getLogger(__name__)

#: Seconds between attempts: quick at first (a database restart), then every 10 minutes for ~24 hours.
#: RQ takes interval i for retry i only when the list is as long as ``max``, hence the padding.
RETRY_INTERVALS: tuple[int, ...] = (5, 15, 30, 60, 120, 300) + (600,) * 138
FAILURE_TTL = timedelta(days=365)
JOB_TIMEOUT = 60
JOB_ID_PREFIX = "ticket-"
META_KEY = "snapshot"

_store: TicketStore | None = None


def default_retry() -> Retry:
    return Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS))


def enqueue_snapshot(queue: Queue, data: dict[str, Any], retry: Retry | None = None) -> Job:
    """Queue ``data`` (TicketSnapshot.to_dict()) for saving; raises InvalidSnapshot before queuing junk.

    The job's arguments, description and id carry the ticket number only: RQ logs them, and the caller's
    number must stay out of logs. The snapshot travels in ``job.meta``.
    """
    snapshot = TicketSnapshot.from_dict(data)
    return queue.enqueue(
        save_ticket_snapshot,
        snapshot.number,
        snapshot.revision,
        meta={META_KEY: snapshot.to_dict()},
        retry=retry or default_retry(),
        job_id=f"{JOB_ID_PREFIX}{snapshot.number}-r{snapshot.revision}-{uuid.uuid4().hex[:8]}",
        description=f"save ticket {snapshot.number} revision {snapshot.revision}",
        job_timeout=JOB_TIMEOUT,
        failure_ttl=int(FAILURE_TTL.total_seconds()),
    )


def make_enqueue(queue: Queue):
    """The ``enqueue`` callable TicketWriter wants, bound to ``queue``."""
    return functools.partial(enqueue_snapshot, queue)


def configure(store: TicketStore | None) -> None:
    """Set the store jobs of this process save into (None: build it from the settings on first use)."""
    global _store
    _store = store


def _current_store() -> TicketStore:
    global _store
    if _store is None:
        _store = TicketStore(make_session_factory(make_engine(load_settings().database_url)))
    return _store


def save_ticket_snapshot(number: str | dict[str, Any], revision: int | None = None) -> bool:
    """The job: save one snapshot (from the job's meta; a dict argument: a job queued by an older
    version, or a direct call). Raises StorageUnavailable (or any other error) so RQ retries."""
    if isinstance(number, dict):
        data: Any = number
    else:
        job = get_current_job()
        data = job.meta.get(META_KEY) if job is not None else None
        if data is None:
            raise InvalidSnapshot(f"ticket {number} revision {revision}: the job carries no snapshot")
    snapshot = TicketSnapshot.from_dict(data)
    changed = _current_store().save(snapshot)
    log.info("ticket %s revision %d %s", snapshot.number, snapshot.revision,
             "saved" if changed else "already stored (no change)")
    return changed


def requeue_failed(queue: Queue) -> int:
    """Put every failed ticket job of ``queue`` back in the queue (other jobs stay); returns how many."""
    registry = queue.failed_job_registry
    count = 0
    for job_id in registry.get_job_ids():
        if job_id.startswith(JOB_ID_PREFIX):
            registry.requeue(job_id)
            count += 1
    return count
