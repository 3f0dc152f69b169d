"""Builds the FastAGI server of one process: the handlers, their dependencies and the limits."""

from __future__ import annotations

from agi_scripts.handlers import build_registry
from agi_scripts.registry import HandlerRegistry
from agi_scripts.server import FastAGIServer, ServerLimits
from hotline.services import Services


def build_server(services: Services, registry: HandlerRegistry | None = None,
                 reuse_port: bool = False) -> FastAGIServer:
    s = services.settings
    return FastAGIServer(registry or build_registry(services), s.agi_host, s.agi_port,
                         ServerLimits(max_sessions=s.agi_max_sessions, read_timeout=s.agi_read_timeout,
                                      session_timeout=s.agi_session_timeout), reuse_port=reuse_port)
