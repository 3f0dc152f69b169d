"""No fault at all: the harness itself works (servers, processes, call stream, invariants). Passes today."""

from __future__ import annotations

import pytest

from tests.faults.hotline_proc import check_invariants, plan_calls, run_calls
from tests.faults.scenario import start_hotline

pytestmark = pytest.mark.faults


def test_a_stream_of_calls_without_faults_keeps_every_invariant(hotline, pg):
    running = start_hotline(hotline)
    results = run_calls(hotline.agi_port, plan_calls(60, hangup_every=10), threads=6)
    summary = check_invariants(pg.url, results, planned=60, known=running.warmup, timeout=30)
    assert summary.kinds == {"routed": 54, "abandoned": 6}, summary
    assert not hotline.spool_lines()
    assert running.agi.alive and running.worker.alive
