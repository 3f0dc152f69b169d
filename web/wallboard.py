"""What the wallboard, ``GET /api/queues`` and Prometheus show of the queues.

Per queue and for the whole hotline: the live figures (``queues.statistics``), the agents by state with each
paused agent's reason and time in pause (``queues.presence``), and the agents Erlang C says the current load
needs; for the hotline, the latest abandoned callers and the open call-backs. A caller's number only ever
leaves here masked (``orders.caller.mask``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime, timezone

from prometheus_client.core import GaugeMetricFamily

from base import metrics
from orders.caller import mask
from queues import erlang
from queues.agents import AgentNotFound
from queues.presence import AgentState, AgentStatus, QueueCounts
from queues.statistics import QueueFigures

__all__ = ["queues_document", "agent_json", "agents_listing", "watch_queue_metrics", "STAFFING_SECONDS"]

log = logging.getLogger(__name__)

STAFFING_SECONDS = 1800  # Erlang C sizes the load of the last 30 minutes
STAFFING_GOAL = 0.8  # of the calls answered within the service target (settings.stats_service_seconds)
CONNECTION_TARGET = 0.95  # GB/T 33358: at least 95 % of calls connected over any 24 hours
ABANDONED_SHOWN = 50
HOTLINE_LABEL = "_hotline"  # the Prometheus queue label of the whole hotline (no queue name starts with "_")
AGENT_STATES = tuple(s.value for s in AgentStatus if s is not AgentStatus.logged_out)

_FIGURES = ("waiting", "longest_wait_seconds", "offered", "answered", "abandoned", "short_abandoned", "gave_up",
            "completed", "answered_in_target", "service_level", "average_speed_of_answer", "average_handle_time",
            "connection_rate_24h")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value




def _figures_json(figures: QueueFigures) -> dict:
    return {name: _rounded(getattr(figures, name)) for name in _FIGURES}


def _counts_json(counts: QueueCounts) -> dict:
    return {"logged_in": counts.logged_in, **{state: getattr(counts, state) for state in AGENT_STATES},
            "unreachable": counts.unreachable,
            "paused_agents": [{"code": p.code, "reason": p.reason, "since": _iso(p.since),
                               "seconds": round(p.seconds)} for p in counts.paused_agents]}


def _staffing(statistics, queue: str | None, counts: QueueCounts, settings, now: float) -> dict:
    """Erlang C on the calls offered in the last 30 minutes and today's handle time, for the service target."""
    calls, handle = statistics.recent_load(queue, seconds=STAFFING_SECONDS, now=now)
    target = settings.stats_service_seconds
    traffic = needed = None
    if calls == 0 or handle is not None:  # with calls but no completed one yet, the load is unknown
        traffic = erlang.traffic(calls, STAFFING_SECONDS, handle or 0.0)
        needed = erlang.agents_needed(calls, STAFFING_SECONDS, handle or 0.0, target, STAFFING_GOAL)
    return {"model": "erlang_c", "interval_seconds": STAFFING_SECONDS, "calls": calls,
            "handle_seconds": None if handle is None else round(handle, 1), "target_seconds": target,
            "goal": STAFFING_GOAL, "traffic_erlangs": None if traffic is None else round(traffic, 3),
            "agents_needed": needed, "agents_staffed": counts.logged_in - counts.paused}


def agent_json(state: AgentState, name: str | None = None) -> dict:
    """One agent's state as the API and the agent's stream give it."""
    call = state.call
    return {"code": state.code, "name": name, "state": state.state.value, "since": _iso(state.since),
            "queues": list(state.queues), "paused": state.paused, "reason": state.reason,
            "paused_since": _iso(state.paused_since),
            "call": {"call_id": call.call_id, "ticket": call.ticket or None, "queue": call.queue,
                     "since": _iso(call.since)} if call else None,
            "wrap_up_until": _iso(state.wrap_up_until), "reachable": state.reachable}


def agents_listing(services, code: str | None = None) -> list[dict]:
    """Every agent (or the one of ``code``): those configured and any Asterisk reports, by code."""
    presence = services.presence
    if code is not None:
        try:
            name = services.agents.get(code).name
        except AgentNotFound:
            name = None
        return [agent_json(presence.state(code), name)]
    names = {agent.code: agent.name for agent in services.agents.list()}
    states = {state.code: state for state in presence.all_states()}
    return [agent_json(states.get(c) or AgentState(c, AgentStatus.logged_out), names.get(c))
            for c in sorted(names.keys() | states.keys())]


def queues_document(services, *, now: float | None = None) -> dict:
    """The wallboard: per queue (those with calls today, callers waiting or agents logged in) and for the
    hotline; the logged-in agents; the latest abandoned callers; the open call-backs."""
    now = time.time() if now is None else now
    settings, statistics, presence = services.settings, services.queue_statistics, services.presence
    figures = statistics.all_figures(now=now)
    states = [s for s in presence.all_states(now) if s.logged_in]
    for queue in {q for s in states for q in s.queues} - figures.keys():
        figures[queue] = statistics.figures(queue, now=now)
    names = {agent.code: agent.name for agent in services.agents.list()}

    def scope(queue: str) -> dict:
        counts = presence.queue_counts(queue or None, now)
        return {"queue": queue or None, "figures": _figures_json(figures[queue]), "agents": _counts_json(counts),
                "staffing": _staffing(statistics, queue or None, counts, settings, now)}

    return {
        "at": _iso(now), "day": figures[""].day,
        "service_seconds": settings.stats_service_seconds,
        "short_abandon_seconds": settings.stats_short_abandon_seconds,
        "connection_target": CONNECTION_TARGET,
        "hotline": scope(""),
        "queues": [scope(q) for q in sorted(figures) if q],
        "agents": [agent_json(s, names.get(s.code)) for s in sorted(states, key=lambda s: (s.state.value, s.code))],
        "abandoned": [{"queue": a.queue, "caller": mask(a.caller), "ticket": a.ticket or None,
                       "at": _iso(a.at), "wait_seconds": round(a.wait_seconds, 1), "short": a.short}
                      for a in statistics.abandoned(limit=ABANDONED_SHOWN)],
        "call_backs": [{"id": c.id, "queue": c.queue, "caller": c.caller, "ticket": c.ticket,
                        "abandoned_at": _iso(c.abandoned_at.timestamp()), "due_at": _iso(c.due_at.timestamp()),
                        "state": c.state, "attempts": c.attempts, "agent": c.agent, "outcome": c.outcome,
                        "late": c.late} for c in services.call_backs.listing()],
    }


# --- Prometheus ----------------------------------------------------------------------------------------------

_GAUGES = (  # (figure, metric name, help)
    ("waiting", "hotline_queue_waiting_calls", "Callers waiting in the queue now."),
    ("longest_wait_seconds", "hotline_queue_longest_wait_seconds", "The longest current wait in the queue."),
    ("offered", "hotline_queue_offered_today", "Calls offered to the queue today (local day)."),
    ("answered", "hotline_queue_answered_today", "Calls answered today."),
    ("abandoned", "hotline_queue_abandoned_today", "Callers who hung up waiting today, short abandons included."),
    ("short_abandoned", "hotline_queue_short_abandoned_today", "Callers who hung up within the short-abandon time."),
    ("service_level", "hotline_queue_service_level_ratio", "Share of today's calls answered within the target."),
    ("average_speed_of_answer", "hotline_queue_average_speed_of_answer_seconds", "Mean wait of today's answers."),
    ("average_handle_time", "hotline_queue_average_handle_time_seconds", "Mean talk time of today's calls."),
    ("connection_rate_24h", "hotline_queue_connection_rate_24h_ratio", "Share of calls answered, last 24 hours."),
)


class QueueMetrics:
    """A Prometheus collector: the live figures per queue, read from Redis at each scrape (never pushed).
    Queue ``_hotline`` is the whole hotline."""

    def __init__(self) -> None:
        self._services = None

    def watch(self, services) -> None:
        self._services = weakref.ref(services)

    def describe(self):
        return []  # names known only at scrape: the registry must not collect when this is registered

    def collect(self):
        services = self._services() if self._services is not None else None
        if services is None:
            return
        up = GaugeMetricFamily("hotline_queue_figures_up", "1 when this scrape could read the live queue figures.")
        try:
            figures = services.queue_statistics.all_figures()
            counts = {queue: services.presence.queue_counts(queue or None) for queue in figures}
        except Exception as exc:  # a failing collector would fail the whole scrape, every other metric with it
            log.warning("queue metrics not read: %s", type(exc).__name__, extra={"event": "web.queue_metrics_failed"})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for figure, name, documentation in _GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for queue, values in figures.items():
                value = getattr(values, figure)
                if value is not None:
                    family.add_metric([queue or HOTLINE_LABEL], value)
            yield family
        agents = GaugeMetricFamily("hotline_queue_agents", "Agents logged in to the queue, by state.",
                                   labels=["queue", "state"])
        for queue, count in counts.items():
            for state in AGENT_STATES:
                agents.add_metric([queue or HOTLINE_LABEL, state], getattr(count, state))
        yield agents


_collector = QueueMetrics()
_registered = threading.Lock()
_done = False


def watch_queue_metrics(services) -> None:
    """Expose ``services``' queue figures on the process's registry (registered once; the latest app wins)."""
    global _done
    with _registered:
        if not _done:
            metrics.registry().register(_collector)
            _done = True
    _collector.watch(services)
