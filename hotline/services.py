"""The long-lived objects one process needs, built once from the settings and passed to the drivers."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from rq import Queue
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from base.db import make_engine, make_session_factory
from config import Settings
from hotline.redis_conn import connect_redis
from jobs.tickets import make_enqueue
from orders.store import TicketStore
from orders.writer import TicketWriter, spool_path_for


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker
    _redis: object | None = field(default=None, repr=False)

    @property
    def redis(self):
        """The Redis client, connected on first use (so a process that never needs it never starts it)."""
        if self._redis is None:
            self._redis = connect_redis(self.settings)
        return self._redis

    @functools.cached_property
    def tickets(self) -> TicketStore:
        """The ticket store over this process's database."""
        return TicketStore(self.session_factory)

    @functools.cached_property
    def writer(self) -> TicketWriter:
        """The TicketWriter of this process: its store, its RQ queue, the spool under its data dir."""
        queue = Queue(self.settings.rq_queue, connection=self.redis)
        return TicketWriter(self.tickets, make_enqueue(queue), spool_path_for(self.settings.data_dir))

    def close(self) -> None:
        self.engine.dispose()
        if self._redis is not None:
            self._redis.connection_pool.disconnect()


def build_services(settings: Settings, redis=None) -> Services:
    engine = make_engine(settings.database_url)
    return Services(settings=settings, engine=engine, session_factory=make_session_factory(engine), _redis=redis)
