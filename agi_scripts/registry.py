"""Handlers by request name: ``agi://host:4573/NAME`` runs the handler registered as NAME."""

from __future__ import annotations

from typing import Protocol

from agi_scripts.channel import HotlineAGI


class AGIHandler(Protocol):
    """One kind of AGI request. ``handle`` runs in the session's thread; one instance serves all sessions."""

    def handle(self, agi: HotlineAGI) -> None: ...


class DuplicateHandler(ValueError):
    """Two handlers claim one request name: a start-up error, never a call-time surprise."""


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, AGIHandler] = {}

    def register(self, name: str, handler: AGIHandler) -> None:
        if not name or "/" in name or "?" in name:
            raise ValueError(f"invalid AGI handler name {name!r}")
        if name in self._handlers:
            raise DuplicateHandler(f"an AGI handler named {name!r} is already registered")
        self._handlers[name] = handler

    def get(self, name: str) -> AGIHandler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)
