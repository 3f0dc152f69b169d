"""Start-up failures an operator can act on: storage that cannot be reached, in one line.

``hotline`` commands call :func:`describe_storage_error` when building the services or migrating fails,
and print its line instead of a traceback. The line names the storage (its URL without the password)
and the driver's first line (host, port, reason), with SQL parameters, passwords and long digit runs
(phone numbers) taken out.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from orders.errors import StorageError, safe_error_text

__all__ = ["describe_storage_error", "is_storage_error", "safe_url"]

# Credentials a driver may quote back: "scheme://user:password@", "password=...", "redis://:password@".
_URL_PASSWORD = re.compile(r"(//[^/\s:@]*:)[^@\s]+@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_LIMIT = 300


def _scrub(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (database and Redis URLs alike)."""
    if not url:
        return url
    try:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return make_url(url).render_as_string(hide_password=True)
        parts = urlsplit(url)
    except (sa_exc.ArgumentError, ValueError):
        return _scrub(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def _storage_cause(exc: BaseException) -> BaseException | None:
    """The first storage error in ``exc``'s chain (a wrapper's cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sa_exc.SQLAlchemyError, psycopg.Error, redis.RedisError, StorageError)):
            return current
        original = getattr(current, "original", None)  # orders.store keeps the SQLAlchemy error there
        current = original if isinstance(original, BaseException) else (current.__cause__ or current.__context__)
    return None


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) comes from the database or Redis."""
    return _storage_cause(exc) is not None


def describe_storage_error(exc: BaseException, database_url: str | None = None, redis_url: str | None = None) -> str:
    """One line for an operator: which storage failed, where (its URL without the password) and why.

    ``database_url`` / ``redis_url`` (the settings' values) name the target; without them the line says
    only what the error does. An error that does not come from storage is still reduced to one safe line.
    """
    cause = _storage_cause(exc)
    if cause is None:
        return _one_line(safe_error_text(exc, limit=_LIMIT))
    if isinstance(cause, redis.RedisError):
        what, url = "Redis", redis_url
    else:
        what, url = "the database", database_url
    original = getattr(cause, "original", None)
    if isinstance(cause, StorageError) and not isinstance(original, BaseException):
        reason = str(cause)  # orders' own messages are one safe line already
    else:
        reason = safe_error_text(original if isinstance(original, BaseException) else cause, limit=_LIMIT)
    where = f" at {safe_url(url)}" if url else ""
    return _one_line(f"cannot use {what}{where}: {reason}")


def _one_line(text: str) -> str:
    return " ".join(_scrub(text).split())
