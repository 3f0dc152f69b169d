"""The AGI handlers, one module each; ``build_registry`` names them for the server."""

from __future__ import annotations

from agi_scripts.registry import HandlerRegistry
from hotline.services import Services


def build_registry(services: Services) -> HandlerRegistry:
    from agi_scripts.handlers.incoming import IncomingCall

    registry = HandlerRegistry()
    registry.register("incoming", IncomingCall.from_services(services))
    return registry
