"""Which Asterisk queue a caller joins, and with what priority (QUEUE_PRIO: higher is answered first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class QueueChoice:
    queue: str
    priority: int


@dataclass(frozen=True)
class RoutingRules:
    """Routes keyed "language:category" ("*" for any category), e.g. {"zh-CN:urgent": "urgent-zh"}."""

    routes: Mapping[str, str]
    default_queue: str
    priority_normal: int = 1
    priority_urgent: int = 10
    repeat_caller_boost: int = 1

    @classmethod
    def from_settings(cls, settings) -> "RoutingRules":
        return cls(dict(settings.queue_routes), settings.default_queue, settings.priority_normal,
                   settings.priority_urgent, settings.repeat_caller_boost)

    def choose(self, language: str, category: str | None, urgency: str, repeat_caller: bool) -> QueueChoice:
        """Language and category pick the queue; urgency and a recent earlier call raise the priority."""
        category = category or "general"
        queue = (self.routes.get(f"{language}:{category}") or self.routes.get(f"{language}:*")
                 or self.routes.get(f"{language}:general") or self.default_queue)
        priority = self.priority_urgent if urgency == "high" else self.priority_normal
        if repeat_caller:
            priority += self.repeat_caller_boost
        return QueueChoice(queue, priority)

    def queues(self) -> set[str]:
        return set(self.routes.values()) | {self.default_queue}
