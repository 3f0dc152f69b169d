from pathlib import Path

import pytest

from config import ConfigError, load_settings

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
