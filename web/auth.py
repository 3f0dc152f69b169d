"""Bearer-token auth for the HTTP API: managing tokens, and the ``require_roles`` view decorator.

Tokens are stored only as their SHA-256 (:mod:`web.tokens`); checking one is a hash and one indexed
query. A small per-app cache keeps recently seen tokens for a few seconds, so a revoked token stops
working in this process within that time (``create_app(..., token_cache_ttl=...)``).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from flask import current_app, g, request
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from web.tokens import ApiToken, Role, hash_token, new_token
from web.errors import ApiError

__all__ = [
    "TokenError",
    "TokenStoreUnavailable",
    "TokenIdentity",
    "TokenInfo",
    "TokenAuthenticator",
    "create_token",
    "revoke_token",
    "list_tokens",
    "authenticate",
    "require_roles",
]

_NAME_MAX = 100
# RFC 6750 b64token: what may follow "Bearer ".
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


class TokenError(ValueError):
    """A token cannot be created or revoked as asked."""


class TokenStoreUnavailable(RuntimeError):
    """The database holding the tokens cannot be reached, so no token can be checked right now."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who is calling the API: the token's name, role, (for a department token) department and (for an
    agent's token) the agent's code, which ties the token to that agent's phone and queues."""

    name: str
    role: Role
    department: str | None = None
    agent: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed to an operator (never its hash nor its clear value)."""

    name: str
    role: Role
    department: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.name, Role(row.role), row.department, row.created_at, row.revoked_at)


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise TokenError(f"unknown role {role!r}; expected one of {', '.join(r.value for r in Role)}") from None


def create_token(session_factory, name: str, role: Role | str, department: str | None = None,
                 agent: str | None = None) -> str:
    """Store a new token and return it in clear: the only time it is ever shown.

    A department token must name its department; other roles must not. An agent token may name the
    agent's code (its phone and queues); other roles must not. Names are unique among active tokens, so a
    token can be revoked by its name.
    """
    role = _role(role)
    name = (name or "").strip()
    if not name or len(name) > _NAME_MAX:
        raise TokenError(f"a token needs a name of 1 to {_NAME_MAX} characters")
    department = department.strip() if department is not None else None
    if role is Role.department:
        if not department:
            raise TokenError("a department token needs the name of its department")
        if len(department) > _NAME_MAX:
            raise TokenError(f"a department name has at most {_NAME_MAX} characters")
    elif department is not None:
        raise TokenError(f"a {role.value} token sees every department; do not give it a department")
    agent = agent.strip() if agent is not None else None
    if agent is not None and role is not Role.agent:
        raise TokenError("only an agent token names an agent")
    if agent is not None and not (agent.isascii() and agent.isalnum() and 1 <= len(agent) <= 20):
        raise TokenError("an agent code is 1 to 20 letters or digits")

    token = new_token()
    with session_factory.begin() as session:
        clash = session.scalar(
            select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)).limit(1)
        )
        if clash is not None:
            raise TokenError(f"an active token named {name!r} already exists; revoke it or pick another name")
        session.add(ApiToken(name=name, role=role, department=department, agent=agent,
                             token_hash=hash_token(token)))
    return token


def revoke_token(session_factory, token_or_name: str) -> TokenInfo:
    """Revoke the active token given in clear, or else the active token with that name."""
    now = datetime.now(timezone.utc)
    with session_factory.begin() as session:
        row = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token_or_name), ApiToken.revoked_at.is_(None))
        )
        if row is None:
            row = session.scalar(
                select(ApiToken).where(ApiToken.name == token_or_name, ApiToken.revoked_at.is_(None)).limit(1)
            )
        if row is None:
            # Do not echo the argument: it may be a clear token.
            raise TokenError("no active token matches that token or name")
        row.revoked_at = now
        return _info(row)


def list_tokens(session_factory) -> list[TokenInfo]:
    """Every token, active and revoked, oldest first."""
    with session_factory() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)).all()
        return [_info(row) for row in rows]


class TokenAuthenticator:
    """Turns a clear token into a :class:`TokenIdentity`, or None when unknown or revoked.

    Raises :class:`TokenStoreUnavailable` when the database cannot be reached.

    Only valid tokens are cached (an attacker's guesses never fill the cache); the cache is cleared
    whole when it reaches ``max_entries``.
    """

    def __init__(self, session_factory, ttl: float = 5.0, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._session_factory = session_factory
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenIdentity]] = {}
        self._lock = threading.Lock()

    def identify(self, token: str) -> TokenIdentity | None:
        digest = hash_token(token)
        now = self._clock()
        if self._ttl > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            with self._session_factory() as session:
                row = session.execute(
                    select(ApiToken.name, ApiToken.role, ApiToken.department, ApiToken.agent, ApiToken.revoked_at)
                    .where(ApiToken.token_hash == digest)
                ).first()
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise TokenStoreUnavailable(f"cannot check API tokens: {type(exc).__name__}") from None
        if row is None or row.revoked_at is not None:
            with self._lock:
                self._cache.pop(digest, None)
            return None
        identity = TokenIdentity(row.name, Role(row.role), row.department, row.agent)
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) >= self._max_entries:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, identity)
        return identity

    def forget(self) -> None:
        """Drop every cached token (e.g. right after revoking one in this process)."""
        with self._lock:
            self._cache.clear()


def _unauthorized(message: str, invalid: bool) -> ApiError:
    challenge = 'Bearer realm="hotline"' + (', error="invalid_token"' if invalid else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def authenticate() -> TokenIdentity:
    """The caller of the current request, or an :class:`ApiError` 401."""
    header = request.headers.get("Authorization")
    if not header:
        raise _unauthorized("this endpoint needs an 'Authorization: Bearer <token>' header", invalid=False)
    match = _BEARER.match(header)
    if match is None:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", invalid=True)
    try:
        identity = current_app.extensions["web.auth"].identify(match.group(1))
    except TokenStoreUnavailable:
        raise ApiError(503, "storage_unavailable", "tokens cannot be checked right now; try again shortly",
                       headers={"Retry-After": "5"}) from None
    if identity is None:
        raise _unauthorized("the token is unknown or has been revoked", invalid=True)
    return identity


def require_roles(*roles: Role | str):
    """Let a view run only for a valid bearer token of one of ``roles``; sets ``flask.g.caller_token``."""
    if not roles:
        raise TypeError("require_roles needs at least one role")
    allowed = frozenset(Role(r) for r in roles)

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            identity = authenticate()
            if identity.role not in allowed:
                raise ApiError(403, "forbidden", f"a {identity.role.value} token may not use this endpoint")
            g.caller_token = identity
            return view(*args, **kwargs)

        return wrapper

    return decorator
