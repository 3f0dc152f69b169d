"""Erlang C staffing: how many agents a queue needs to answer a share of its calls within a target wait.

The model (M/M/N, callers never hang up): calls arrive at random, ``traffic`` Erlangs = calls x handle
time / interval. Erlang B comes from its recursion B(0) = 1, B(n) = A B(n-1) / (n + A B(n-1)), which
neither overflows nor loses precision at thousands of Erlangs (no factorials, no powers). From it:

* probability of waiting  C(A, N) = N B / (N - A (1 - B)), and 1 when N <= A (the queue never drains);
* service level           1 - C e^{-(N - A) t / h}: the share answered within t seconds (h = handle time);
* average speed of answer C h / (N - A).

Erlang C ignores abandons, so it slightly overstates the agents a real queue needs.
"""

from __future__ import annotations

import math

__all__ = ["ErlangError", "traffic", "erlang_b", "probability_of_waiting", "service_level",
           "average_speed_of_answer", "agents_needed"]

_MAX_EXTRA_AGENTS = 1_000_000  # a bound on the search, far beyond any queue


class ErlangError(ValueError):
    """A staffing question that has no answer: negative counts, an empty interval, a goal of 100 %."""


def _check(name: str, value: float, *, positive: bool = False) -> float:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ErlangError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")
    return value


def traffic(calls: float, interval_seconds: float, handle_seconds: float) -> float:
    """The offered load in Erlangs: calls x handle time / interval."""
    _check("calls", calls)
    _check("interval_seconds", interval_seconds, positive=True)
    _check("handle_seconds", handle_seconds)
    return calls * handle_seconds / interval_seconds


def erlang_b(traffic_erlangs: float, agents: int) -> float:
    """The share of calls that would find all ``agents`` busy if they were turned away (Erlang B)."""
    a = _check("traffic_erlangs", traffic_erlangs)
    if _check("agents", agents) != int(agents):
        raise ErlangError(f"agents must be a whole number, got {agents!r}")
    b = 1.0
    for n in range(1, int(agents) + 1):
        b = a * b / (n + a * b)
    return b


def _erlang_c(a: float, n: int, b: float) -> float:
    return 1.0 if n <= a else n * b / (n - a * (1.0 - b))


def probability_of_waiting(traffic_erlangs: float, agents: int) -> float:
    """The share of callers who wait at all (Erlang C): 1 when ``agents`` <= traffic, 0 with no traffic."""
    if _check("traffic_erlangs", traffic_erlangs) == 0:
        return 0.0
    return _erlang_c(traffic_erlangs, int(agents), erlang_b(traffic_erlangs, agents))


def _service_level(a: float, n: int, c: float, handle: float, target: float) -> float:
    if a == 0:
        return 1.0
    if n <= a:
        return 0.0
    return 1.0 - c * math.exp(-(n - a) * target / handle)


def service_level(calls: float, interval_seconds: float, handle_seconds: float, agents: int,
                  target_seconds: float) -> float:
    """The share of calls answered within ``target_seconds`` with ``agents`` on the queue: 1 with no
    traffic, 0 when ``agents`` <= traffic."""
    a = traffic(calls, interval_seconds, handle_seconds)
    _check("target_seconds", target_seconds)
    return _service_level(a, int(agents), probability_of_waiting(a, agents), handle_seconds, target_seconds)


def average_speed_of_answer(calls: float, interval_seconds: float, handle_seconds: float, agents: int) -> float:
    """Mean wait in seconds over all calls (those answered at once count 0); infinite when ``agents`` <=
    traffic."""
    a = traffic(calls, interval_seconds, handle_seconds)
    if a == 0:
        return 0.0
    if agents <= a:
        return math.inf
    return probability_of_waiting(a, agents) * handle_seconds / (agents - a)


def agents_needed(calls: float, interval_seconds: float, handle_seconds: float, target_seconds: float,
                  goal: float = 0.8) -> int:
    """The fewest agents that answer ``goal`` of the calls within ``target_seconds`` (0 with no traffic)."""
    a = traffic(calls, interval_seconds, handle_seconds)
    _check("target_seconds", target_seconds)
    if not 0 < goal < 1:
        raise ErlangError(f"goal must be a share between 0 and 1 (exclusive), got {goal!r}")
    if a == 0:
        return 0
    n = math.floor(a) + 1
    b = erlang_b(a, n)
    # Walk up from the first stable staffing, carrying Erlang B along: O(agents) in all.
    while n < a + _MAX_EXTRA_AGENTS:
        if _service_level(a, n, _erlang_c(a, n, b), handle_seconds, target_seconds) >= goal:
            return n
        n += 1
        b = a * b / (n + a * b)
    raise ErlangError(f"no staffing up to {n} agents reaches {goal:.0%} within {target_seconds} s")
