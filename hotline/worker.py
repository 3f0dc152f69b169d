"""The background worker: RQ jobs (deferred ticket writes, later dispatch and surveys) with the scheduler.

Before taking jobs it replays the ticket spool (snapshots written to disk while Redis was down too).
A SimpleWorker runs jobs in its own process: the jobs are short database writes, and forking per job
would also fork the database connection pool.
"""

from __future__ import annotations

import logging

from rq import Queue, SimpleWorker

from config import Settings
from hotline.services import build_services

log = logging.getLogger("hotline.worker")


def run_worker(settings: Settings, burst: bool = False) -> bool:
    from orders import jobs
    from orders.writer import writer_for

    services = build_services(settings)
    jobs.configure(services.tickets)
    handled, kept = writer_for(services).replay_spool()
    if handled or kept:
        log.info("ticket spool replayed", extra={"event": "worker.spool", "handled": handled, "kept": kept})
    queue = Queue(settings.rq_queue, connection=services.redis)
    worker = SimpleWorker([queue], connection=services.redis)
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        services.close()
