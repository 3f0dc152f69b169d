"""The hotline command as an operator uses it: migrate, tokens, a simulated call, clear errors."""

from __future__ import annotations


import pytest
from click.testing import CliRunner

from hotline.cli import main


@pytest.fixture
def run(hotline_cli):
    return hotline_cli


def test_tokens_are_created_listed_and_revoked(run):
    assert run("db", "upgrade").exit_code == 0
    created = run("token", "create", "--name", "water-co", "--role", "department", "--department", "water")
    assert created.exit_code == 0 and created.output.startswith("hl_")
    assert run("token", "list").output.splitlines() == ["water-co\tdepartment\twater\tactive"]
    assert run("token", "revoke", "water-co").output.strip() == "revoked"
    assert run("token", "list").output.splitlines() == ["water-co\tdepartment\twater\trevoked"]


def test_token_mistakes_get_a_message_not_a_traceback(run):
    run("db", "upgrade")
    result = run("token", "create", "--name", "x", "--role", "department")
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
    assert run("token", "revoke", "nobody").exit_code == 1


def test_prompts_with_an_unknown_menu_gets_a_message(run):
    result = CliRunner().invoke(main, ["prompts"], env={"HOTLINE_MENU": "no-such-menu"}, catch_exceptions=False)
    assert result.exit_code == 1 and "no-such-menu" in result.output


def test_a_bad_setting_stops_the_command_with_its_name(run):
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"HOTLINE_AGI_PORT": "many"})
    assert result.exit_code == 78 and "agi_port" in result.output  # EX_CONFIG: supervisors do not restart it


def test_call_without_a_server_says_what_to_do(run):
    result = run("call", "--port", "1", "--quiet")
    assert result.exit_code == 1 and "hotline serve" in result.output
