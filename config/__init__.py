"""The hotline's settings: one object, read once at start-up and passed in.

Sources, later ones winning: the defaults below, an optional TOML file (``--config`` or
``HOTLINE_CONFIG``), then ``HOTLINE_*`` environment variables.
"""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
