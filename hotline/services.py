"""The long-lived objects one process needs, built once from the settings and passed to the drivers."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from config import Settings
from hotline.db import make_engine, make_session_factory


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
            from hotline.redis_conn import connect_redis

            self._redis = connect_redis(self.settings)
        return self._redis

    @functools.cached_property
    def tickets(self):
        """The ticket store (orders.store.TicketStore) over this process's database."""
        from orders.store import TicketStore

        return TicketStore(self.session_factory)

    def close(self) -> None:
        self.engine.dispose()
        if self._redis is not None:
            self._redis.connection_pool.disconnect()


def build_services(settings: Settings, redis=None) -> Services:
    engine = make_engine(settings.database_url)
    return Services(settings=settings, engine=engine, session_factory=make_session_factory(engine), _redis=redis)
