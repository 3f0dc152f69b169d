"""The background worker: RQ jobs (deferred ticket writes, later dispatch and surveys) with the scheduler.

Before taking jobs it replays the ticket spool (snapshots written to disk while Redis was down too).
A SimpleWorker runs jobs in its own process: the jobs are short database writes, and forking per job
would also fork the database connection pool.
"""

from __future__ import annotations

import logging
import threading

from rq import Queue, SimpleWorker

from config import Settings
from hotline.services import build_services
from jobs import tickets as ticket_jobs

log = logging.getLogger("hotline.worker")

SPOOL_REPLAY_SECONDS = 60.0


def run_worker(settings: Settings, burst: bool = False) -> bool:
    services = build_services(settings)
    ticket_jobs.configure(services.tickets)
    writer = services.writer
    writer.replay_spool()
    stop = threading.Event()
    if not burst:  # snapshots spooled later (a FastAGI process lost Redis) are picked up within a minute
        threading.Thread(target=_replay_spool_every, args=(writer, SPOOL_REPLAY_SECONDS, stop), daemon=True,
                         name="spool-replay").start()
    queue = Queue(settings.rq_queue, connection=services.redis)
    worker = SimpleWorker([queue], connection=services.redis)
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        stop.set()
        services.close()


def _replay_spool_every(writer, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            writer.replay_spool()
        except Exception:
            log.exception("ticket spool replay failed; trying again later")
