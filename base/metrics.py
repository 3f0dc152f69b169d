"""Prometheus metrics: one registry per process, shared by the web app, the FastAGI server and the workers.

Any module defines its metrics through :func:`counter`, :func:`histogram` and :func:`gauge`; calling them
again with the same name returns the metric already defined, so a module imported twice, or two app
instances in one process (tests), never hit prometheus_client's "Duplicated timeseries" error.
"""

from __future__ import annotations

import threading
from typing import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

__all__ = ["MetricsError", "registry", "counter", "histogram", "gauge", "exposition", "serve"]

_lock = threading.Lock()
_registry: CollectorRegistry | None = None
_metrics: dict[str, tuple[type, tuple[str, ...], object]] = {}


class MetricsError(ValueError):
    """A metric name is already defined with another type or other labels."""


def registry() -> CollectorRegistry:
    """The process-wide registry (with process, platform and GC collectors)."""
    global _registry
    with _lock:
        if _registry is None:
            reg = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
            _registry = reg
        return _registry


def _define(kind: type, name: str, documentation: str, labelnames: Sequence[str], **kwargs):
    reg = registry()
    labels = tuple(labelnames)
    # prometheus_client stores a counter without its "_total" suffix; key on that so both spellings meet.
    key = name[: -len("_total")] if kind is Counter and name.endswith("_total") else name
    with _lock:
        known = _metrics.get(key)
        if known is not None:
            known_kind, known_labels, metric = known
            if known_kind is not kind or known_labels != labels:
                raise MetricsError(
                    f"metric {key!r} is already defined as a {known_kind.__name__} with labels {list(known_labels)}"
                )
            return metric
        try:
            metric = kind(name, documentation, labelnames=labels, registry=reg, **kwargs)
        except ValueError as exc:  # clashes with a series another metric exposes (e.g. foo_count)
            raise MetricsError(f"metric {name!r} cannot be defined: {exc}") from None
        _metrics[key] = (kind, labels, metric)
        return metric


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """A Counter on the shared registry, defined once."""
    return _define(Counter, name, documentation, labelnames)


def gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
    """A Gauge on the shared registry, defined once."""
    return _define(Gauge, name, documentation, labelnames)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Histogram:
    """A Histogram on the shared registry, defined once (the buckets of the first definition stay)."""
    return _define(Histogram, name, documentation, labelnames, buckets=tuple(buckets))


def exposition() -> tuple[bytes, str]:
    """The registry in the text exposition format, and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def serve(port: int, addr: str = "127.0.0.1"):
    """Expose the registry over HTTP from a daemon thread (for processes without a web app, e.g. FastAGI).

    Returns the WSGI server; its ``server_port`` is the bound port (pass 0 to pick a free one) and
    ``shutdown()`` stops it.
    """
    server, _thread = start_http_server(port, addr=addr, registry=registry())
    return server
