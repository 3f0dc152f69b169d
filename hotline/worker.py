"""The background worker: RQ jobs (ticket writes that even the spool refused, later dispatch and surveys)
with the scheduler, plus two housekeeping threads:

* the ticket spool replayed every few seconds (``start_replaying``: snapshots a database outage left on
  this host's disk reach the database within seconds of its return, with no RQ scheduler involved);
* stale calls settled every ``stale_call_check_seconds``: tickets still ``in_ivr`` well past the longest AGI session
  (``agi_session_timeout`` + a margin) belong to a handler that died (its process was killed), and the
  dialplan's fallback queued their callers (TicketStore.settle_stale_calls);
* virtual-number bindings of closed tickets shortened to closing + ``virtual_days_after_close``, and
  expired ones ended (their numbers freed), every ``deadline_check_seconds``;
* ticket deadlines checked every ``deadline_check_seconds`` (Casework.scan_deadlines): tickets near their
  deadline are warned about, those past it marked overdue and escalated (an audit event, a warning log
  line, the supervisors' board). The deadlines live in the database, not in scheduled jobs, so a worker
  or a Redis that restarts loses none: the next check finds them.

A SimpleWorker runs jobs in its own process: the jobs are short database writes, and forking per job
would also fork the database connection pool.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from rq import Queue, SimpleWorker

from config import Settings
from hotline.services import build_services
from jobs import tickets as ticket_jobs
from orders.errors import StorageError
from virtual_numbers.errors import BrokerError

log = logging.getLogger("hotline.worker")



def stale_cutoff(settings: Settings, now: datetime | None = None) -> datetime:
    """Tickets created before this and still ``in_ivr`` belong to a call whose handler died."""
    now = now or datetime.now(timezone.utc)
    return now - timedelta(seconds=settings.agi_session_timeout + settings.stale_call_margin_seconds)


def settle_stale_calls(services, now: datetime | None = None) -> int:
    """One round of settling; errors are logged, never raised (the next round tries again)."""
    try:
        settled = services.tickets.settle_stale_calls(stale_cutoff(services.settings, now))
    except StorageError as exc:
        log.warning("stale calls not settled now: %s", exc)
        return 0
    if settled:
        log.warning("%d ticket(s) left in_ivr by a dead call handler settled as queued (fallback)", settled)
    return settled


def check_deadlines(services, now: datetime | None = None) -> int:
    """One round of deadline checks; errors are logged, never raised (the next round tries again)."""
    try:
        notices = services.casework.scan_deadlines(now)
    except StorageError as exc:
        log.warning("ticket deadlines not checked now: %s", exc)
        return 0
    for notice in notices:
        extra = {"event": "ticket.overdue" if notice.overdue else "ticket.deadline_near", "ticket": notice.number,
                 "department": notice.department, "due_kind": notice.due_kind, "due_at": notice.due_at.isoformat()}
        if notice.overdue:
            log.warning("ticket %s is overdue (%s by %s); escalated to the supervisors", notice.number,
                        notice.due_kind, notice.due_at.isoformat(), extra=extra)
        else:
            log.info("ticket %s: its %s deadline (%s) is near", notice.number, notice.due_kind,
                     notice.due_at.isoformat(), extra=extra)
    return len(notices)


def end_virtual_bindings(services, now: datetime | None = None) -> int:
    """One round of virtual-number upkeep: bindings of closed tickets shortened, expired ones ended (their
    numbers freed); errors are logged, never raised."""
    try:
        shortened = services.broker.follow_closed_tickets()
        ended = services.broker.expire_due(now)
        services.broker.replay_receipts()  # receipts spooled while the database was down, or left by an exited process
    except (StorageError, BrokerError) as exc:
        log.warning("virtual-number bindings not checked now: %s", exc)
        return 0
    if shortened or ended:
        log.info("virtual numbers: %d binding(s) of closed tickets shortened, %d expired and freed", shortened, ended,
                 extra={"event": "virtual.bindings_ended", "shortened": shortened, "ended": ended})
    return ended


def run_worker(settings: Settings, burst: bool = False) -> bool:
    services = build_services(settings)
    ticket_jobs.configure(services.tickets)
    writer = services.writer
    writer.replay_spool()
    settle_stale_calls(services)
    check_deadlines(services)
    end_virtual_bindings(services)
    stop = threading.Event()
    if not burst:
        services.start_replaying()
        for name, seconds, check in (("settle-stale-calls", settings.stale_call_check_seconds, settle_stale_calls),
                                     ("check-deadlines", settings.deadline_check_seconds, check_deadlines),
                                     ("end-virtual-bindings", settings.deadline_check_seconds, end_virtual_bindings)):
            threading.Thread(target=_every, args=(services, seconds, check, stop), daemon=True, name=name).start()
    queue = Queue(settings.rq_queue, connection=services.redis)
    worker = SimpleWorker([queue], connection=services.redis)
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        stop.set()
        services.close()


def _every(services, seconds: float, check, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            check(services)
        except Exception:
            log.exception("%s failed; trying again later", check.__name__)
