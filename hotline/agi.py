"""Builds the FastAGI server of one process: the handlers with their dependencies, and the limits."""

from __future__ import annotations

import socket

from agi_scripts.handlers.agent import AgentPhone
from agi_scripts.handlers.incoming import IncomingCall
from agi_scripts.handlers.virtual import VirtualCall
from agi_scripts.registry import HandlerRegistry
from agi_scripts.server import FastAGIServer, ServerLimits
from hotline.services import Services
from ivr.engine import Engine
from ivr.menu import load_menu
from queues.routing import RoutingRules


def build_incoming(services: Services) -> IncomingCall:
    """The ``incoming`` handler over this process's storage, menu and routing rules."""
    s = services.settings
    return IncomingCall(engine=Engine(load_menu(s.menu)), rules=RoutingRules.from_settings(s),
                        tickets=services.tickets, writer=services.writer, numbers=services.ticket_numbers,
                        repeat_callers=services.repeat_callers, region=s.region,
                        local_area_code=s.local_area_code or None)


def build_registry(services: Services) -> HandlerRegistry:
    """Every AGI handler by its request name (``agi://host/NAME``)."""
    registry = HandlerRegistry()
    registry.register("incoming", build_incoming(services))
    registry.register("virtual", VirtualCall(broker=services.broker))
    registry.register("agent", AgentPhone(desk=services.desk, agents=services.agents))
    return registry


def build_server(services: Services, registry: HandlerRegistry | None = None,
                 listener: socket.socket | None = None) -> FastAGIServer:
    """The FastAGI server of this process, on ``listener`` (shared by the processes of ``hotline agi``)
    or on its own socket bound to agi_host:agi_port."""
    s = services.settings
    limits = ServerLimits(max_sessions=s.agi_max_sessions, read_timeout=s.agi_read_timeout,
                          session_timeout=s.agi_session_timeout, max_busy=s.agi_max_busy,
                          allowed_hosts=s.agi_allowed_hosts)
    return FastAGIServer(registry or build_registry(services), s.agi_host, s.agi_port, limits, listener=listener)
