"""Erlang C staffing (queues/erlang.py): the published worked example, hand-computed values, edges, and
monotonicity properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queues.erlang import (
    ErlangError,
    agents_needed,
    average_speed_of_answer,
    erlang_b,
    probability_of_waiting,
    service_level,
    traffic,
)

# The worked example: 360 calls in 30 minutes, 240 s handle time (48 Erlangs), answered within 20 s.
CALLS, INTERVAL, HANDLE, TARGET = 360, 1800, 240, 20


def test_traffic_in_erlangs():
    assert traffic(CALLS, INTERVAL, HANDLE) == 48.0


def test_worked_example():
    assert probability_of_waiting(48, 55) == pytest.approx(0.2387, abs=1e-4)
    assert service_level(CALLS, INTERVAL, HANDLE, 55, TARGET) == pytest.approx(0.8668, abs=1e-4)  # "about 86.7 %"
    assert service_level(CALLS, INTERVAL, HANDLE, 54, TARGET) == pytest.approx(0.8172, abs=1e-4)
    assert service_level(CALLS, INTERVAL, HANDLE, 53, TARGET) == pytest.approx(0.7518, abs=1e-4)
    assert agents_needed(CALLS, INTERVAL, HANDLE, TARGET, goal=0.8) == 54
    assert average_speed_of_answer(CALLS, INTERVAL, HANDLE, 55) == pytest.approx(8.18, abs=0.01)


def test_small_cases_by_hand():
    # B(2, 3) = (2^3/3!) / (1 + 2 + 2 + 8/6) = 4/19; C(2, 3) = 3 B / (3 - 2 (1 - B)) = 4/9.
    assert erlang_b(2, 3) == pytest.approx(4 / 19)
    assert probability_of_waiting(2, 3) == pytest.approx(4 / 9)
    # One agent, half an Erlang: P(wait) = A = 0.5; SL(t) = 1 - 0.5 e^{-(1 - 0.5) t / h}.
    assert probability_of_waiting(0.5, 1) == pytest.approx(0.5)
    assert service_level(30, 3600, 60, 1, 60) == pytest.approx(1 - 0.5 * math.exp(-0.5))
    assert erlang_b(5, 0) == 1.0


def test_edges():
    assert agents_needed(0, INTERVAL, HANDLE, TARGET) == 0
    assert agents_needed(10, INTERVAL, 0, TARGET) == 0
    assert probability_of_waiting(48, 48) == 1.0 and probability_of_waiting(48, 10) == 1.0
    assert service_level(CALLS, INTERVAL, HANDLE, 48, TARGET) == 0.0
    assert service_level(CALLS, INTERVAL, HANDLE, 0, TARGET) == 0.0
    assert average_speed_of_answer(CALLS, INTERVAL, HANDLE, 48) == math.inf
    assert probability_of_waiting(0, 0) == 0.0 and service_level(0, INTERVAL, HANDLE, 0, TARGET) == 1.0
    assert agents_needed(1, 3600, 60, 0, goal=0.5) == 1  # a trickle still needs somebody
    for bad in (lambda: traffic(-1, 60, 60), lambda: traffic(1, 0, 60), lambda: erlang_b(1, -1),
                lambda: agents_needed(10, 60, 60, 20, goal=1.0), lambda: agents_needed(10, 60, 60, 20, goal=0),
                lambda: service_level(10, 60, 60, 2, -1), lambda: probability_of_waiting(math.nan, 3)):
        with pytest.raises(ErlangError):
            bad()


def test_large_traffic_is_stable():
    # 10,000 Erlangs: factorials would overflow; the Erlang B recursion does not.
    p = probability_of_waiting(10_000, 10_100)
    assert 0.0 < p < 1.0
    n = agents_needed(360_000, 1800, 180, 20, goal=0.8)  # 36,000 Erlangs
    assert 36_000 < n < 36_500
    assert service_level(360_000, 1800, 180, n, 20) >= 0.8 > service_level(360_000, 1800, 180, n - 1, 20)
    assert probability_of_waiting(1, 5000) < 1e-300  # underflows quietly to 0, never to NaN


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.1, 300), n=st.integers(1, 400))
def test_more_agents_never_hurt(a, n):
    assert erlang_b(a, n + 1) <= erlang_b(a, n)
    assert probability_of_waiting(a, n + 1) <= probability_of_waiting(a, n)
    calls, interval, handle = a * 3600 / 180, 3600, 180
    assert service_level(calls, interval, handle, n + 1, 20) >= service_level(calls, interval, handle, n, 20)


@settings(max_examples=60, deadline=None)
@given(calls=st.integers(1, 5000), handle=st.integers(10, 900), target=st.integers(0, 60),
       goal=st.floats(0.5, 0.95), more=st.integers(0, 500))
def test_agents_needed_is_the_fewest_and_grows_with_the_calls(calls, handle, target, goal, more):
    n = agents_needed(calls, 1800, handle, target, goal=goal)
    assert service_level(calls, 1800, handle, n, target) >= goal
    assert n == 1 or service_level(calls, 1800, handle, n - 1, target) < goal
    assert agents_needed(calls + more, 1800, handle, target, goal=goal) >= n
    assert agents_needed(calls, 1800, handle, target + 5, goal=goal) <= n
