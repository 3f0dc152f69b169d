"""The Redis fast lookup of bindings. The database is the truth; this only saves it reads.

Keys (all under ``key_prefix``):

* ``vn:binding:<id>``: what a resolution needs, as JSON (the citizen's number is in the value, never in
  a key), or the tombstone ``ended`` once the binding ended.
* ``vn:pair:<X>:<digest>``: the binding a caller reaches on X, by pair. The digest is an HMAC of the
  caller's number, so no number shows in a key (SCAN, MONITOR, the slow log). Without a secret
  (``cache_secret``) the HMAC key is a constant: it hides numbers from a glance, not from someone who
  hashes every phone number; production passes a secret shared by all processes.
* ``vn:ext:<X>:<extension>``: the binding of an extension on X.

Only a "connect" answer is ever taken from here, and only after checking the caller against the
binding's own data: a missing, stale or ended entry sends the resolution to the database, which refills
it. The tombstone stops a refill that read the database just before the binding ended from bringing it
back (writes check for it in the same script). Entries live ``ttl`` seconds, which bounds how long a
phone removed from a department keeps reaching its citizens through the fast path.

Any Redis error is logged (without numbers), and Redis is then left alone for ``pause`` seconds: the
caller falls back to the database, never fails for Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

log = logging.getLogger(__name__)

ENDED = "ended"
_DEFAULT_SECRET = b"hotline-virtual-numbers"

# KEYS[1]: binding key; KEYS[2..]: pair/extension keys. ARGV: JSON, TTL, binding id.
_PUT = """
if redis.call('GET', KEYS[1]) == 'ended' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[3], 'EX', ARGV[2]) end
return 1
"""

# KEYS[1]: pair or extension key. ARGV[1]: the prefix of binding keys. One round trip for a lookup.
_LOOKUP = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return {id, redis.call('GET', ARGV[1] .. id)}
"""


class BindingCache:
    def __init__(self, client: redis.Redis | None, *, key_prefix: str = "hotline:", secret: bytes | str | None = None,
                 ttl: int = 300, pause: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._redis = client
        self._prefix = key_prefix + "vn:"
        self._secret = secret.encode() if isinstance(secret, str) else (secret or _DEFAULT_SECRET)
        self.ttl = max(1, int(ttl))
        self._pause = pause
        self._monotonic = monotonic
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._owed: list = []  # (when, tombstones, stale keys) Redis missed: sent before it is used again
        if client is not None:
            self._put = client.register_script(_PUT)
            self._lookup = client.register_script(_LOOKUP)

    # -- keys -------------------------------------------------------------------------------------

    def binding_key(self, binding_id: int) -> str:
        return f"{self._prefix}binding:{binding_id}"

    def pair_key(self, x: str, caller: str) -> str:
        digest = hmac.new(self._secret, caller.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{self._prefix}pair:{x}:{digest}"

    def extension_key(self, x: str, extension: str) -> str:
        return f"{self._prefix}ext:{x}:{extension}"

    # -- use --------------------------------------------------------------------------------------

    def usable(self) -> bool:
        """Redis is configured, not paused after an error, and no tombstone is still owed to it."""
        if self._redis is None or self._monotonic() < self._paused_until:
            return False
        with self._lock:
            # An entry older than the TTL has expired by itself: its tombstone is no longer owed.
            since = self._monotonic() - self.ttl
            owed, self._owed = [item for item in self._owed if item[0] >= since], []
        if not owed:
            return True
        return self._send([key for _, keys, _ in owed for key in keys], [key for _, _, keys in owed for key in keys])

    def lookup(self, x: str, caller: str, extension: str | None = None) -> dict | None:
        """The cached data of the binding this pair (or extension) points to; None if unknown or ended."""
        if not self.usable():
            return None
        key = self.extension_key(x, extension) if extension else self.pair_key(x, caller)
        try:
            found = self._lookup(keys=[key], args=[self._prefix + "binding:"])
        except (redis.RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return None
        if not found or found[1] is None or found[1] in (ENDED, ENDED.encode()):
            return None
        try:
            data = json.loads(found[1])
        except ValueError:
            return None
        return data if isinstance(data, dict) and str(data.get("id")) == _text(found[0]) else None

    def put(self, data: dict, pairs: Iterable[str] = (), extension: str | None = None) -> bool:
        """Store a live binding's data, and point the given callers (and its extension) at it."""
        if not self.usable():
            return False
        x = data["x"]
        keys = [self.binding_key(data["id"])] + [self.pair_key(x, c) for c in pairs]
        if extension:
            keys.append(self.extension_key(x, extension))
        try:
            return bool(self._put(keys=keys, args=[json.dumps(data, separators=(",", ":")), self.ttl, data["id"]]))
        except (redis.RedisError, OSError) as exc:
            self._failed("store", exc)
            return False

    def drop_pairs(self, x: str, callers: Iterable[str]) -> None:
        """Forget where these callers go on X (a new binding may have made one of them ambiguous)."""
        self._send([], [self.pair_key(x, c) for c in callers])

    def forget(self, ended: Iterable[tuple[int, str, Iterable[str], str | None]]) -> None:
        """Bindings ended, each given as (id, X, callers, extension): leave tombstones, drop their keys."""
        tombstones, stale = [], []
        for binding_id, x, callers, extension in ended:
            tombstones.append(self.binding_key(binding_id))
            stale += [self.pair_key(x, c) for c in callers] + ([self.extension_key(x, extension)] if extension else [])
        self._send(tombstones, stale)

    def _send(self, tombstones: list[str], stale: list[str]) -> bool:
        """Write tombstones and delete stale keys. While Redis is paused, or if it fails, they are owed:
        sent before this process uses Redis again."""
        if self._redis is None or not (tombstones or stale):
            return True
        if self._monotonic() < self._paused_until:
            self._owe(tombstones, stale)
            return False
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in tombstones:
                pipe.set(key, ENDED, ex=self.ttl)
            if stale:
                pipe.delete(*stale)
            pipe.execute()
            return True
        except (redis.RedisError, OSError) as exc:
            self._owe(tombstones, stale)
            self._failed("update", exc)
            return False

    def _owe(self, tombstones: list[str], stale: list[str]) -> None:
        at = self._monotonic()
        with self._lock:
            self._owed.append((at, tombstones, stale))

    def _failed(self, action: str, exc: BaseException) -> None:
        self._paused_until = self._monotonic() + self._pause
        log.warning("virtual numbers: Redis failed to %s a binding (%s); using the database for %.0f s",
                    action, type(exc).__name__, self._pause)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
