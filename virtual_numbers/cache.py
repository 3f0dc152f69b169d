"""The Redis fast lookup of bindings and refusals. The database is the truth; this only saves it reads.

Keys (all under ``key_prefix``):

* ``vn:binding:<id>``: what a resolution needs, as JSON (the citizen's number is in the value, never in
  a key), or the tombstone ``ended`` once the binding ended.
* ``vn:pair:<X>:<digest>``: the binding a caller reaches on X, by pair. The digest is an HMAC of the
  caller's number, so no number shows in a key (SCAN, MONITOR, the slow log). Without a secret
  (``cache_secret``) the HMAC key is a constant: it hides numbers from a glance, not from someone who
  hashes every phone number; production passes a secret shared by all processes.
* ``vn:ext:<X>:<extension>``: the binding of an extension on X.
* ``vn:gen:<X>``: X's generation, a random token. Every change that could turn a refusal on X into
  another answer (a new binding on X, one ending, X added, drained or removed) replaces it *after* its
  commit; it also lapses after ``ttl`` seconds and is then made anew.
* ``vn:no:<X>:<digest>:<extension>``: a refusal the database gave this (caller, X [, extension]) that
  involves no binding of the caller's (an unknown pair or number, a drained number, how the caller's last
  binding there ended, an ambiguity, an extension asked for), prefixed with X's generation read *before*
  that database read. It is used only while X's generation is still that one: a refusal read before a
  binding was made can never hide it (the binding's commit comes before its new generation, which comes
  before any use of the refusal it outdates). Refusals live ``negative_ttl`` seconds: the bound on how long
  a phone newly added to a department can still be refused on a number it was refused on just before
  (departments' phones do not change generations), and on how long a binding that expired by the clock
  (ended by the next expire_due, which changes the generation) can leave an older refusal's reason.
* ``vn:call:<call id>``: the note of a call the fast path connected: ``<binding id>|<time>|<extension>|
  <caller>``, for ``note_time`` seconds. The outgoing leg (Broker.dial_target), perhaps in another
  process, reads it instead of the call's receipt, which reaches the database a moment later (an outgoing
  leg later than that, or without Redis, reads the receipt).

A resolution is one round trip (the script ``_LOOKUP``): the caller's live binding and its data, the note
written with it; or, when there is none, X's generation and the cached refusal. (A live binding whose data
does not connect the caller costs a second round trip, ``_REFUSAL``, for those two.) Only a "connect" answer
is taken from a binding entry, and only after checking the caller against the binding's own data: a
missing, stale or ended entry sends the resolution to the refusal entry, then to the database, which
refills both. The tombstone stops a refill that read the database just before the binding ended from
bringing it back (writes check for it in the same script). Entries live ``ttl`` seconds, which bounds
how long a phone removed from a department keeps reaching its citizens through the fast path.

Any Redis error is logged (without numbers), and Redis is then left alone for ``pause`` seconds: the
caller falls back to the database, never fails for Redis. Tombstones, dropped keys and new generations
Redis missed are owed: sent before this process uses Redis again.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import redis
from redis.exceptions import NoScriptError

try:  # redis-py parses with hiredis by itself when it is installed; the lookup packs with it too
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - without hiredis, redis-py's own packer
    _pack_command = None

log = logging.getLogger(__name__)

ENDED = "ended"
_DEFAULT_SECRET = b"hotline-virtual-numbers"
_DIGESTS = 65536  # callers whose digest each process keeps (an HMAC costs more than the rest of a key)
_PARSED = 8192  # binding entries each process keeps parsed, by their exact text

# KEYS[1]: binding key; KEYS[2..]: pair/extension keys, then the call's note key if ARGV[4] is not ''.
# ARGV: JSON, TTL, binding id, the note (without the binding id) or '', the note's TTL.
_PUT = """
if redis.call('GET', KEYS[1]) == 'ended' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local last = #KEYS
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[last], ARGV[3] .. ARGV[4], 'EX', ARGV[5])
  last = last - 1
end
for i = 2, last do redis.call('SET', KEYS[i], ARGV[3], 'EX', ARGV[2]) end
return 1
"""

def _generation_and_refusal(generation_key: str, refusal_key: str, fresh: str, ttl: str) -> str:
    """Lua that sets ``gen`` to X's generation (made ``fresh`` if X has none, for ``ttl``) and ``no`` to the
    refusal cached under that generation, or false: the part _LOOKUP and _REFUSAL share."""
    return f"""local gen = redis.call('GET', {generation_key})
if not gen then
  gen = {fresh}
  redis.call('SET', {generation_key}, gen, 'EX', {ttl})
end
local no = redis.call('GET', {refusal_key})
if no and string.sub(no, 1, #gen + 1) == gen .. '|' then no = string.sub(no, #gen + 2) else no = false end"""


# KEYS: the pair or extension key, X's generation, the refusal key, the call's note key.
# ARGV: the prefix of binding keys, a fresh generation (X has none), its TTL, the note (without the
# binding id; '': none), the note's TTL. Returns {binding id, its data} when the key points to a live
# binding (noted under the call), else {binding id or false, false, X's generation, the refusal or false}.
_LOOKUP = """
local id = redis.call('GET', KEYS[1])
if id then
  local data = redis.call('GET', ARGV[1] .. id)
  if data and data ~= 'ended' then
    if ARGV[4] ~= '' then redis.call('SET', KEYS[4], id .. ARGV[4], 'EX', ARGV[5]) end
    return {id, data}
  end
end
""" + _generation_and_refusal("KEYS[2]", "KEYS[3]", "ARGV[2]", "ARGV[3]") + """
return {id or false, false, gen, no}
"""

# KEYS: X's generation, the refusal key. ARGV: a fresh generation (X has none), its TTL.
# Returns {X's generation, the refusal or false}.
_REFUSAL = _generation_and_refusal("KEYS[1]", "KEYS[2]", "ARGV[1]", "ARGV[2]") + """
return {gen, no}
"""

# KEYS: X's generation, the refusal key. ARGV: the generation read before the database, the refusal, TTL.
_REFUSE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS[1]: the call's note. ARGV[1]: the prefix of binding keys. Returns {note, its binding's data}.
_NOTE = """
local note = redis.call('GET', KEYS[1])
if not note then return false end
local id = string.match(note, '^(%d+)|')
if not id then return false end
return {note, redis.call('GET', ARGV[1] .. id)}
"""


class Found(NamedTuple):
    """What one lookup found: a live binding, or else (a refusal and) X's generation."""

    data: dict | None  # the live binding the pair (or extension) points to, its id checked
    refusal: dict | None  # a refusal the database gave, still valid for X's generation
    generation: str | None  # X's generation read now (None: not read): give it back to ``refuse``
    noted: bool  # the call's note was written, pointing at ``data``'s binding


class Note(NamedTuple):
    """A call the fast path connected (for its outgoing leg)."""

    binding_id: int
    at: float  # when it was resolved (a timestamp)
    extension: str | None
    caller: str  # E.164
    data: dict | None  # the binding's cached data; None: not cached (read the database)
    ended: bool  # the binding's tombstone is there


_MISSED = Found(None, None, None, False)


class BindingCache:
    def __init__(self, client: redis.Redis | None, *, key_prefix: str = "hotline:", secret: bytes | str | None = None,
                 ttl: int = 300, negative_ttl: int = 30, note_time: int = 30, pause: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._redis = client
        self._prefix = key_prefix + "vn:"
        self._binding_prefix = self._prefix + "binding:"
        self._secret = secret.encode() if isinstance(secret, str) else (secret or _DEFAULT_SECRET)
        self.ttl = max(1, int(ttl))
        self.negative_ttl = max(0, int(negative_ttl))  # 0: refusals are not cached
        self.note_time = max(1, int(note_time))
        self._generation_ttl = max(self.ttl, self.negative_ttl)
        self._pause = pause
        self._monotonic = monotonic
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._owed: list = []  # (when, tombstones, stale keys, numbers) Redis missed: sent before it is used again
        self._digest = functools.lru_cache(maxsize=_DIGESTS)(self._hmac)
        self._parsed: dict = {}
        self._keys: dict = {}  # (X, caller, extension) -> the lookup's three keys
        self._tokens = itertools.count()
        self._token_prefix = os.urandom(6).hex() + "."  # with the count: a generation never made twice
        self._pid = os.getpid()
        self._idle: list = []  # connections of the client's pool kept for lookups (see _evalsha)
        if client is not None:
            self._put = client.register_script(_PUT)
            self._lookup = client.register_script(_LOOKUP)
            self._refusal = client.register_script(_REFUSAL)
            self._refuse = client.register_script(_REFUSE)
            self._note = client.register_script(_NOTE)

    # -- keys -------------------------------------------------------------------------------------

    def _hmac(self, caller: str) -> str:
        return hmac.new(self._secret, caller.encode(), hashlib.sha256).hexdigest()[:32]

    def binding_key(self, binding_id: int) -> str:
        return f"{self._binding_prefix}{binding_id}"

    def pair_key(self, x: str, caller: str) -> str:
        return f"{self._prefix}pair:{x}:{self._digest(caller)}"

    def extension_key(self, x: str, extension: str) -> str:
        return f"{self._prefix}ext:{x}:{extension}"

    def generation_key(self, x: str) -> str:
        return f"{self._prefix}gen:{x}"

    def refusal_key(self, x: str, caller: str, extension: str | None) -> str:
        return f"{self._prefix}no:{x}:{self._digest(caller)}:{extension or ''}"

    def note_key(self, call_id: str) -> str:
        return f"{self._prefix}call:{call_id}"

    # -- use --------------------------------------------------------------------------------------

    def usable(self) -> bool:
        """Redis is configured, not paused after an error, and nothing is still owed to it."""
        if self._redis is None or self._monotonic() < self._paused_until:
            return False
        if not self._owed:
            return True
        with self._lock:
            # An entry older than the TTL has expired by itself: its tombstone is no longer owed.
            since = self._monotonic() - max(self.ttl, self.negative_ttl)
            owed, self._owed = [item for item in self._owed if item[0] >= since], []
        if not owed:
            return True
        return self._send([key for item in owed for key in item[1]], [key for item in owed for key in item[2]],
                          [x for item in owed for x in item[3]])

    def lookup(self, x: str, caller: str, extension: str | None = None, call_id: str | None = None,
               at: float = 0.0) -> Found:
        """One round trip: the live binding this pair (or extension) points to, noted under ``call_id``
        (resolved at ``at``) for the outgoing leg; failing that, X's generation and a refusal kept for the
        caller."""
        if not self.usable():
            return _MISSED
        keys = self._keys.get((x, caller, extension))
        if keys is None:
            if len(self._keys) >= _DIGESTS:
                self._keys.clear()
            keys = self._keys[(x, caller, extension)] = (
                self.extension_key(x, extension) if extension else self.pair_key(x, caller), self.generation_key(x),
                self.refusal_key(x, caller, extension))
        try:
            reply = self._evalsha(
                self._lookup, 4, *keys, self.note_key(call_id or "-"), self._binding_prefix,
                self._token_prefix + str(next(self._tokens)), self._generation_ttl,
                "" if call_id is None else f"|{at:.3f}|{extension or ''}|{caller}", self.note_time)
        except (redis.RedisError, OSError, ValueError, TypeError) as exc:
            self._failed("look up", exc)
            return _MISSED
        if len(reply) == 2:
            binding_id, raw = reply
            data = self._parsed.get(raw)
            if data is None:
                data = _binding(binding_id, raw)
                if data is not None:
                    if len(self._parsed) >= _PARSED:
                        self._parsed.clear()
                    self._parsed[raw] = data  # shared: callers copy before changing it
            elif str(data["id"]) != _text(binding_id):
                data = None
            if data is not None:
                return Found(data, None, None, call_id is not None)
            return self.refusal(x, caller, extension)
        return Found(None, _json(reply[3]), _text(reply[2]), False)

    def refusal(self, x: str, caller: str, extension: str | None = None) -> Found:
        """X's generation (made if it has none), and a refusal kept for the caller still valid under it."""
        if not self.usable():
            return _MISSED
        try:
            generation, refusal = self._evalsha(
                self._refusal, 2, self.generation_key(x), self.refusal_key(x, caller, extension),
                self._token_prefix + str(next(self._tokens)), self._generation_ttl)
        except (redis.RedisError, OSError, ValueError, TypeError) as exc:
            self._failed("look up", exc)
            return _MISSED
        return Found(None, _json(refusal), _text(generation), False)

    def _evalsha(self, script, key_count: int, *keys_then_args) -> list:
        """Run ``script`` on a connection of the client's pool kept for this (the client's own command path
        costs more than the round trip: pool lock, retry wrapper, events; and its packer wraps hiredis's in
        Python). Once again on a fresh connection if the kept one was closed meanwhile (Redis restarted, idle
        timeout)."""
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._idle, self._pid = [], os.getpid()
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._redis.connection_pool.get_connection()
        try:
            for attempt in (1, 2):
                try:
                    command = ("EVALSHA", script.sha, key_count, *keys_then_args)
                    connection.send_packed_command([_pack_command(command)] if _pack_command is not None
                                                   else connection.pack_command(*command))
                    reply = connection.read_response()
                    break
                except NoScriptError:  # Redis restarted or flushed its scripts
                    if attempt == 2:
                        raise
                    connection.send_command("SCRIPT", "LOAD", script.script)
                    connection.read_response()
                except redis.ConnectionError:
                    connection.disconnect()
                    if attempt == 2:
                        raise
        except BaseException:
            connection.disconnect()  # never leave half a reply for the next lookup to read
            self._idle.append(connection)
            raise
        self._idle.append(connection)
        if not isinstance(reply, list):
            raise ValueError("unexpected reply to a lookup")
        return reply

    def put(self, data: dict, pairs: Iterable[str] = (), extension: str | None = None,
            note: tuple[str, float, str | None, str] | None = None) -> bool:
        """Store a live binding's data, point the given callers (and its extension) at it, and note the
        call ``note`` = (call id, time, extension, caller) connected through it. False: not stored (its
        tombstone is there, or Redis is not usable)."""
        if not self.usable():
            return False
        x = data["x"]
        keys = [self.binding_key(data["id"])] + [self.pair_key(x, c) for c in pairs]
        if extension:
            keys.append(self.extension_key(x, extension))
        note_text = ""
        if note is not None:
            keys.append(self.note_key(note[0]))
            note_text = f"|{note[1]:.3f}|{note[2] or ''}|{note[3]}"
        try:
            return bool(self._put(keys=keys, args=[json.dumps(data, separators=(",", ":")), self.ttl, data["id"],
                                                   note_text, self.note_time]))
        except (redis.RedisError, OSError) as exc:
            self._failed("store", exc)
            return False

    def refuse(self, x: str, caller: str, extension: str | None, generation: str | None, refusal: dict) -> bool:
        """Keep a refusal the database gave, unless X's generation moved since ``generation`` was read."""
        if generation is None or not self.negative_ttl or not self.usable():
            return False
        try:
            return bool(self._refuse(keys=[self.generation_key(x), self.refusal_key(x, caller, extension)],
                                     args=[generation, json.dumps(refusal, separators=(",", ":")),
                                           self.negative_ttl]))
        except (redis.RedisError, OSError) as exc:
            self._failed("store", exc)
            return False

    def note(self, call_id: str) -> Note | None:
        """The note of a call the fast path connected, with its binding's cached data; None if none."""
        if not self.usable():
            return None
        try:
            found = self._note(keys=[self.note_key(call_id)], args=[self._binding_prefix])
        except (redis.RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        if not found:
            return None
        try:
            binding_id, at, extension, caller = _text(found[0]).split("|", 3)
            binding_id, at = int(binding_id), float(at)
        except ValueError:
            return None
        raw = found[1]
        return Note(binding_id, at, extension or None, caller, _binding(str(binding_id), raw),
                    raw in (ENDED, ENDED.encode()))

    def close(self) -> None:
        """Give the connections kept for lookups back to the client's pool."""
        idle, self._idle = self._idle, []
        if self._redis is None or self._pid != os.getpid():
            return
        for connection in idle:
            self._redis.connection_pool.release(connection)

    def drop_pairs(self, x: str, callers: Iterable[str]) -> None:
        """A binding was made on X: forget where these callers go on X (one of them may now be
        ambiguous), and every refusal on X (a new generation)."""
        self._send([], [self.pair_key(x, c) for c in callers], [x])

    def numbers_changed(self, numbers: Iterable[str]) -> None:
        """These numbers were added, drained or removed: forget their refusals (new generations)."""
        self._send([], [], list(numbers))

    def forget(self, ended: Iterable[tuple[int, str, Iterable[str], str | None]]) -> None:
        """Bindings ended, each given as (id, X, callers, extension): leave tombstones, drop their keys, and
        give their numbers new generations."""
        tombstones, stale, numbers = [], [], []
        for binding_id, x, callers, extension in ended:
            tombstones.append(self.binding_key(binding_id))
            stale += [self.pair_key(x, c) for c in callers] + ([self.extension_key(x, extension)] if extension else [])
            numbers.append(x)
        self._send(tombstones, stale, numbers)

    def _send(self, tombstones: list[str], stale: list[str], numbers: list[str] = ()) -> bool:
        """Write tombstones, delete stale keys, give numbers new generations. While Redis is paused, or if
        it fails, they are owed: sent before this process uses Redis again."""
        numbers = sorted(set(numbers))
        if self._redis is None or not (tombstones or stale or numbers):
            return True
        if self._monotonic() < self._paused_until:
            self._owe(tombstones, stale, numbers)
            return False
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in tombstones:
                pipe.set(key, ENDED, ex=self.ttl)
            if stale:
                pipe.delete(*stale)
            for x in numbers:
                pipe.set(self.generation_key(x), _new_generation(), ex=self._generation_ttl)
            pipe.execute()
            return True
        except (redis.RedisError, OSError) as exc:
            self._owe(tombstones, stale, numbers)
            self._failed("update", exc)
            return False

    def _owe(self, tombstones: list[str], stale: list[str], numbers: list[str]) -> None:
        at = self._monotonic()
        with self._lock:
            self._owed.append((at, tombstones, stale, numbers))

    def _failed(self, action: str, exc: BaseException) -> None:
        self._paused_until = self._monotonic() + self._pause
        log.warning("virtual numbers: Redis failed to %s a binding (%s); using the database for %.0f s",
                    action, type(exc).__name__, self._pause)


def _new_generation() -> str:
    return os.urandom(8).hex()



def _binding(binding_id, raw) -> dict | None:
    """The data of a live binding entry whose id is ``binding_id``; None if missing, ended or not ours."""
    if binding_id is None or raw is None or raw is False or raw in (ENDED, ENDED.encode()):
        return None
    data = _json(raw)
    return data if data is not None and str(data.get("id")) == _text(binding_id) else None


def _json(raw) -> dict | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: bytes | str | int | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
