"""hotline worker: deferred ticket writes and spooled snapshots reach the database."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from rq import Queue

from config import load_settings
from hotline.worker import run_worker
from jobs import tickets as jobs
from orders.snapshot import TicketSnapshot
from orders.spool import SnapshotSpool
from orders.store import TicketStore
from orders.writer import spool_path_for
from tests.conftest import REDIS_URL


def _snapshot(number: str) -> TicketSnapshot:
    now = datetime.now(timezone.utc)
    return TicketSnapshot(number=number, revision=1, caller_raw="13800138000", caller_e164="+8613800138000",
                          caller_kind="mobile", created_at=now, uniqueid=f"{number}.1")


def test_worker_writes_queued_and_spooled_tickets(database_url, engine, session_factory, redis_conn, tmp_path):
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, redis_url=REDIS_URL,
                             rq_queue="test-" + uuid.uuid4().hex[:8])
    queue = Queue(settings.rq_queue, connection=redis_conn)
    try:
        jobs.enqueue_snapshot(queue, _snapshot("2026112800101").to_dict())
        SnapshotSpool(spool_path_for(tmp_path)).append(_snapshot("2026112800102").to_dict())

        run_worker(settings, burst=True)

        store = TicketStore(session_factory)
        assert store.get("2026112800101") is not None  # from the RQ job
        assert store.get("2026112800102") is not None  # from the spool
        assert SnapshotSpool(spool_path_for(tmp_path)).pending() == 0
    finally:
        jobs.configure(None)
        queue.delete(delete_jobs=True)
