"""The shared Prometheus registry and GET /metrics."""

from __future__ import annotations

import urllib.request

import pytest

from base import metrics
from tests.test_web_support import app, bearer, client, services, tokens  # noqa: F401 (fixtures)


def _requests(endpoint: str, method: str, status: str) -> float:
    value = metrics.registry().get_sample_value(
        "hotline_http_requests_total", {"endpoint": endpoint, "method": method, "status": status})
    return value or 0.0


def _latency_count(endpoint: str) -> float:
    value = metrics.registry().get_sample_value(
        "hotline_http_request_duration_seconds_count", {"endpoint": endpoint})
    return value or 0.0


def test_registry_is_one_per_process():
    assert metrics.registry() is metrics.registry()


def test_definitions_are_idempotent():
    first = metrics.counter("test_web_things_total", "Things.", ["kind"])
    assert metrics.counter("test_web_things_total", "Things.", ["kind"]) is first
    assert metrics.counter("test_web_things", "Things.", ["kind"]) is first  # same series, other spelling
    gauge = metrics.gauge("test_web_level", "Level.")
    assert metrics.gauge("test_web_level", "Level.") is gauge
    hist = metrics.histogram("test_web_seconds", "Seconds.", buckets=(0.1, 1))
    assert metrics.histogram("test_web_seconds", "Seconds.", buckets=(0.1, 1)) is hist
    first.labels("a").inc(2)
    assert metrics.registry().get_sample_value("test_web_things_total", {"kind": "a"}) == 2


def test_conflicting_definitions_are_errors():
    metrics.counter("test_web_conflict_total", "Conflict.", ["a"])
    with pytest.raises(metrics.MetricsError):
        metrics.gauge("test_web_conflict", "Conflict.", ["a"])
    with pytest.raises(metrics.MetricsError):
        metrics.counter("test_web_conflict_total", "Conflict.", ["b"])
    metrics.histogram("test_web_hist", "Histogram.")
    with pytest.raises(metrics.MetricsError):
        metrics.gauge("test_web_hist_count", "Clashes with the histogram's _count series.")


def test_metrics_endpoint_counts_requests_by_route_and_status(client, tokens):  # noqa: F811
    before_ok = _requests("/health", "GET", "200")
    before_lat = _latency_count("/health")
    before_401 = _requests("/api/tickets/<number>", "GET", "401")
    before_unmatched = _requests("unmatched", "GET", "404")
    client.get("/health")
    client.get("/api/tickets/123")
    client.get("/no/such/page")
    assert _requests("/health", "GET", "200") == before_ok + 1
    assert _latency_count("/health") == before_lat + 1
    assert _requests("/api/tickets/<number>", "GET", "401") == before_401 + 1
    assert _requests("unmatched", "GET", "404") == before_unmatched + 1

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert "# TYPE hotline_http_requests_total counter" in text
    assert 'hotline_http_requests_total{endpoint="/health",method="GET",status="200"}' in text
    assert "# TYPE hotline_http_request_duration_seconds histogram" in text
    assert "process_cpu_seconds_total" in text or "python_info" in text
    # Ticket numbers never become label values.
    assert 'endpoint="/api/tickets/123"' not in text


def test_metrics_need_no_token(client):  # noqa: F811
    assert client.get("/metrics").status_code == 200


def test_serve_exposes_the_registry_over_http():
    metrics.counter("test_web_served_total", "Served.").inc()
    server = metrics.serve(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "test_web_served_total 1.0" in text
