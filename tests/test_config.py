import ast
import dataclasses
import re
from pathlib import Path

import pytest

from base.vocabulary import Language
from config import ConfigError, Settings, load_settings
from config.settings import LANGUAGES

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "hotline.example.toml"


def test_defaults_are_the_embedded_profile(tmp_path):
    s = load_settings(environ={}, data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{(tmp_path / 'hotline.db').resolve()}"
    assert s.embedded_redis and s.sounds_dir == tmp_path / "sounds"


def test_the_example_file_loads_and_environment_wins():
    s = load_settings(EXAMPLE, environ={"HOTLINE_AGI_PORT": "5000", "HOTLINE_REDIS_URL": "redis://other:6379/1"})
    assert s.database_url.startswith("postgresql://") and s.agi_host == "0.0.0.0"
    assert s.agi_port == 5000 and s.redis_url == "redis://other:6379/1"
    assert s.queue_routes["zh-CN:urgent"] == "urgent-zh"


@pytest.mark.parametrize("environ, message", [
    ({"HOTLINE_AGI_PORT": "many"}, "agi_port must be a whole number"),
    ({"HOTLINE_AGI_PORT": "70000"}, "agi_port must be between"),
    ({"HOTLINE_LOG_FORMAT": "xml"}, "log_format"),
    ({"HOTLINE_AGI_MAX_SESSIONS": "0"}, "agi_max_sessions"),
])
def test_bad_values_get_clear_errors(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("agi_port = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("agi_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'agi_prot'"):
        load_settings(unknown, environ={})


# --- values refused at start, one clear line naming the setting ----------------------------------------

@pytest.mark.parametrize("environ, message", [
    ({"HOTLINE_DATABASE_URL": "not a url"}, "database_url is not a database URL"),
    ({"HOTLINE_DATABASE_URL": "postgresql://hotline:pw@db:port/hotline"}, "database_url is not a database URL"),
    ({"HOTLINE_DATABASE_URL": "mysql://hotline:pw@db/hotline"}, "database_url: 'mysql' is not supported"),
    ({"HOTLINE_DATABASE_URL": "postgres://hotline:pw@db/hotline"}, "SQLAlchemy spells it postgresql://"),
    ({"HOTLINE_DATABASE_URL": "postgresql+psycopg2://db/hotline"}, "database_url: 'postgresql[+]psycopg2'"),
    ({"HOTLINE_REDIS_URL": "http://redis:6379/0"}, "redis_url must start with redis://, rediss:// or unix://"),
    ({"HOTLINE_REDIS_URL": "redis:6379"}, "redis_url must start with"),
    ({"HOTLINE_REDIS_URL": "redis://redis:port/0"}, "redis_url is not a Redis URL"),
    ({"HOTLINE_REDIS_URL": "redis://redis:6379/zero"}, "redis_url: the path of a Redis URL is the database number"),
    ({"HOTLINE_REDIS_URL": "unix://"}, "redis_url: a unix:// URL needs the socket's path"),
    ({"HOTLINE_LOG_LEVEL": "verbose"}, "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"HOTLINE_AGI_PROCESSES": "-1"}, "agi_processes must be 0"),
    ({"HOTLINE_WEB_THREADS": "0"}, "web_threads must be at least 1"),
    ({"HOTLINE_TICKET_IO_THREADS": "0"}, "ticket_io_threads must be at least 1"),
    ({"HOTLINE_TICKET_NUMBER_BLOCK": "0"}, "ticket_number_block must be a whole number from 1 to 100"),
    ({"HOTLINE_TICKET_SAVE_LINGER": "5"}, "ticket_save_linger must be at most 1 second"),
    ({"HOTLINE_TICKET_SAVE_LINGER": "-0.1"}, "ticket_save_linger must be 0 or more seconds"),
    ({"HOTLINE_TICKET_NUMBER_BLOCK": "500"}, "ticket_number_block must be a whole number from 1 to 100"),
    ({"HOTLINE_WEB_MAX_BODY_BYTES": "0"}, "web_max_body_bytes must be at least 1"),
    ({"HOTLINE_REGION": "XX"}, "region must be a two-letter region code"),
    ({"HOTLINE_REGION": "China"}, "region must be a two-letter region code"),
    ({"HOTLINE_PRIORITY_URGENT": "1"}, r"priority_urgent \(1\) must be above priority_normal \(1\)"),
    ({"HOTLINE_PRIORITY_NORMAL": "20"}, "priority_urgent .* must be above priority_normal"),
    ({"HOTLINE_REPEAT_CALLER_BOOST": "9"}, "priority_normal [+] repeat_caller_boost .* must stay below"),
    ({"HOTLINE_REPEAT_CALLER_BOOST": "-1"}, "repeat_caller_boost must be 0 or more"),
    ({"HOTLINE_REPEAT_CALLER_HOURS": "-1"}, "repeat_caller_hours must be 0 or more"),
    ({"HOTLINE_LOCAL_AREA_CODE": "0898"}, "local_area_code must be 2 to 4 digits without the leading 0"),
    ({"HOTLINE_LOCAL_AREA_CODE": "8"}, "local_area_code must be 2 to 4 digits"),
    ({"HOTLINE_LOCAL_AREA_CODE": "89800"}, "local_area_code must be 2 to 4 digits"),
    ({"HOTLINE_LOCAL_AREA_CODE": "haikou"}, "local_area_code must be 2 to 4 digits"),
    ({"HOTLINE_NODE_ID": "100"}, "node_id must be a whole number from 0 to 99"),
    ({"HOTLINE_NODE_ID": "-1"}, "node_id must be a whole number from 0 to 99"),
    ({"HOTLINE_NODE_ID": "one"}, "node_id must be a whole number"),
    ({"HOTLINE_DEFAULT_QUEUE": " "}, "default_queue must name an Asterisk queue"),
])
def test_values_the_services_cannot_run_with_are_refused(environ, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(environ=environ)
    assert "\n" not in str(caught.value)


def test_a_refused_url_never_shows_its_password():
    for url in ("postgresql://hotline:S3CRET@db:port/hotline", "mysql://hotline:S3CRET@db/hotline"):
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"HOTLINE_DATABASE_URL": url})
        assert "S3CRET" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"HOTLINE_REDIS_URL": "redis://:S3CRET@redis:port/0"})
    assert "S3CRET" not in str(caught.value)


@pytest.mark.parametrize("key, message", [
    ('"fr:general"', "queue_routes key 'fr:general' must be \"language:category\""),
    ('"zh-CN"', "queue_routes key 'zh-CN' must be"),
    ('"zh-CN:"', "queue_routes key 'zh-CN:' must be"),
    ('"general:zh-CN"', "queue_routes key 'general:zh-CN' must be"),
])
def test_queue_routes_keys_are_language_and_category(tmp_path, key, message):
    file = tmp_path / "routes.toml"
    file.write_text(f'[queue_routes]\n{key} = "hotline-zh"\n')
    with pytest.raises(ConfigError, match=message):
        load_settings(file, environ={})


def test_known_languages_are_the_ivr_languages():
    # config/ imports nothing of ours (tests/test_layers.py), so it keeps its own copy of the list.
    assert set(LANGUAGES) == {language.value for language in Language}


@pytest.mark.parametrize("url", [
    "sqlite:////var/lib/hotline/hotline.db", "sqlite://", "postgresql://hotline:pw@db.internal:5432/hotline",
    "postgresql+psycopg://hotline:pw@db/hotline?sslmode=require", "postgresql:///hotline?host=/run/postgresql",
])
def test_database_urls_that_run(url):
    assert load_settings(environ={"HOTLINE_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", [
    "redis://redis.internal:6379/0", "rediss://:pw@redis:6380/1", "redis://redis", "unix:///run/redis.sock",
    "unix:///tmp/redis.sock?db=2",
])
def test_redis_urls_that_run(url):
    assert load_settings(environ={"HOTLINE_REDIS_URL": url}).redis_url == url


def test_log_level_and_region_are_read_in_any_case():
    s = load_settings(environ={"HOTLINE_LOG_LEVEL": "warning", "HOTLINE_REGION": "hk"})
    assert (s.log_level, s.region) == ("WARNING", "HK")


# --- HOTLINE_* variables that are not settings ----------------------------------------------------------

@pytest.mark.parametrize("name, suggestion", [
    ("HOTLINE_DATABSE_URL", "did you mean HOTLINE_DATABASE_URL?"),
    ("HOTLINE_REDIS", "did you mean HOTLINE_REDIS_URL?"),
    ("HOTLINE_AGI_PROT", "did you mean HOTLINE_AGI_PORT?"),
    ("HOTLINE_LOGLEVEL", "did you mean HOTLINE_LOG_LEVEL?"),
])
def test_a_misspelt_variable_is_refused_with_the_closest_name(name, suggestion):
    with pytest.raises(ConfigError, match=f"unknown environment variable {name}; {suggestion}"):
        load_settings(environ={name: "postgresql://db/hotline"})


def test_an_unknown_variable_without_a_close_name_is_refused_too():
    with pytest.raises(ConfigError, match="unknown environment variable HOTLINE_ZZZ [(]"):
        load_settings(environ={"HOTLINE_ZZZ": "1"})


def test_queue_routes_cannot_come_from_the_environment():
    with pytest.raises(ConfigError, match="HOTLINE_QUEUE_ROUTES: queue_routes can only be set in the configuration"):
        load_settings(environ={"HOTLINE_QUEUE_ROUTES": "en:*=hotline-en"})


def test_the_config_file_variable_and_the_test_suites_variables_are_not_settings():
    s = load_settings(environ={"HOTLINE_CONFIG": "", "HOTLINE_TEST_BACKENDS": "sqlite",
                               "HOTLINE_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1/test"})
    assert s.database_url.startswith("sqlite:///")


def test_an_unknown_key_in_the_file_gets_the_closest_name(tmp_path):
    file = tmp_path / "typo.toml"
    file.write_text('databse_url = "postgresql://db/hotline"\n')
    with pytest.raises(ConfigError, match="unknown setting 'databse_url' in .*; did you mean 'database_url'[?]"):
        load_settings(file, environ={})


_SHELL_ENV_USE = re.compile(r"(?:\bexport\s+|^\s*|\s)(HOTLINE_[A-Z0-9_]+)=|\$\{?(HOTLINE_[A-Z0-9_]+)", re.MULTILINE)


def _python_env_names(tree: ast.AST):
    """HOTLINE_* names put in or read from a process environment by Python code: os.environ[...] and
    .get(...), setenv/getenv, dict(os.environ, NAME=...), and dicts given as env=/environ= or assigned to an
    ``env`` variable. (Channel variables such as HOTLINE_QUEUE live in other dicts and are not seen.)"""
    def constant(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    def dict_keys(node):
        return [constant(key) for key in node.keys if key is not None] if isinstance(node, ast.Dict) else []

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if node.args and (func.endswith(("setenv", "getenv", "delenv")) or "environ" in func):
                yield constant(node.args[0])
            if func == "dict":
                yield from (keyword.arg for keyword in node.keywords)
            for keyword in node.keywords:
                if keyword.arg in ("env", "environ"):
                    yield from dict_keys(keyword.value)
        elif isinstance(node, ast.Subscript) and "env" in ast.unparse(node.value):
            yield constant(node.slice)
        elif isinstance(node, ast.Assign) and any("env" in ast.unparse(target) for target in node.targets):
            yield from dict_keys(node.value)


def _environment_variables_we_use() -> dict[str, set[str]]:
    """HOTLINE_* names that our code, tests, benchmarks and scripts use as environment variables."""
    root = EXAMPLE.parents[1]
    found: dict[str, set[str]] = {}
    for folder in ("tests", "bench", "hotline", "scripts", ".ci"):
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or path.suffix not in (".py", "", ".sh") or path.name == "test_config.py":
                continue  # (this file sets wrong names on purpose)
            try:
                source = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            if path.suffix == ".py":
                names = _python_env_names(ast.parse(source))
            else:
                names = (a or b for a, b in _SHELL_ENV_USE.findall(source))
            for name in names:
                if name and name.startswith("HOTLINE_"):
                    found.setdefault(name, set()).add(str(path.relative_to(root)))
    for a, b in _SHELL_ENV_USE.findall((root / "Makefile").read_text(encoding="utf-8")):
        found.setdefault(a or b, set()).add("Makefile")
    return found


def test_every_hotline_variable_the_project_sets_is_accepted():
    used = _environment_variables_we_use()
    assert {"HOTLINE_DATABASE_URL", "HOTLINE_TEST_POSTGRES_URL", "HOTLINE_CONFIG"} <= set(used)  # the scan works
    refused = {}
    for name, where in sorted(used.items()):
        try:
            load_settings(environ={name: ""} if name != "HOTLINE_CONFIG" else {})
        except ConfigError as exc:
            if "unknown environment variable" in str(exc):
                refused[name] = sorted(where)
        # other errors are about the empty value, not the name
    assert not refused, f"HOTLINE_* variables in use that load_settings refuses (rename them HOTLINE_TEST_*): {refused}"


# --- new settings ---------------------------------------------------------------------------------------

def test_new_settings_defaults():
    s = load_settings(environ={})
    assert (s.local_area_code, s.node_id, s.log_format, s.web_max_body_bytes) == ("898", 0, "auto", 1024 * 1024)


def test_new_settings_from_the_environment(tmp_path):
    s = load_settings(environ={"HOTLINE_LOCAL_AREA_CODE": "", "HOTLINE_NODE_ID": "7", "HOTLINE_LOG_FORMAT": "text",
                               "HOTLINE_WEB_MAX_BODY_BYTES": "4096"})
    assert (s.local_area_code, s.node_id, s.log_format, s.web_max_body_bytes) == ("", 7, "text", 4096)
    file = tmp_path / "local.toml"
    file.write_text("local_area_code = 10\nnode_id = 99\n")  # a number in TOML is read as the digits
    s = load_settings(file, environ={})
    assert (s.local_area_code, s.node_id) == ("10", 99)


def test_the_example_file_documents_every_setting():
    text = EXAMPLE.read_text(encoding="utf-8")
    # A setting is shown with an example value, or as a commented-out line when it is best left alone.
    shown = set(re.findall(r"^(?:# )?(\w+) =", text, re.MULTILINE)) | set(re.findall(r"^\[(\w+)\]", text, re.MULTILINE))
    missing = {f.name for f in dataclasses.fields(Settings)} - shown
    assert not missing, f"config/hotline.example.toml does not show {sorted(missing)}"
