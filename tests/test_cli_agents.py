"""`hotline agents`, `hotline queue-stats` and `hotline ami`, as an operator uses them (embedded default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_departments import _refused

QUEUE_LOG = Path(__file__).resolve().parent / "fixtures" / "asterisk" / "queue_log.txt"


@pytest.fixture
def run(hotline_cli):
    assert hotline_cli("db", "upgrade").exit_code == 0
    return hotline_cli


def test_agents_are_added_given_queues_listed_and_retired(run):
    added = run("agents", "add", "1001", "--name", "Li Na", "--interface", "PJSIP/agent1001",
                "--language", "zh-CN", "--language", "en", "--queue", "hotline-zh", "--queue", "urgent-zh:2")
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "1001\tLi Na\tPJSIP/agent1001\tzh-CN,en\thotline-zh:0,urgent-zh:2\tactive"
    assert run("agents", "queues", "1001", "--queue", "hotline-en:1").output.split("\t")[4] == "hotline-en:1"
    assert run("agents", "retire", "1001").output.strip().endswith("inactive")
    assert run("agents", "list").output.count("\n") == 1


def test_agent_mistakes_are_one_line_each(run):
    run("agents", "add", "1001", "--name", "Li", "--interface", "PJSIP/agent1001")
    _refused(run("agents", "add", "1001", "--name", "Wang", "--interface", "PJSIP/agent1002"), "1001")
    _refused(run("agents", "queues", "9999", "--queue", "hotline-zh"), "9999")
    bad = run("agents", "queues", "1001", "--queue", "hotline-zh:x")
    assert bad.exit_code == 2 and "penalty" in bad.output


def test_the_figures_are_rebuilt_from_a_queue_log_and_shown(run):
    rebuilt = run("queue-stats", "rebuild", str(QUEUE_LOG))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.output == "18 events from 24 lines (0 malformed, skipped)\n"
    shown = run("queue-stats", "show")  # today's figures: the recorded day (2026-11-28) is over by now
    assert shown.exit_code == 0 and shown.output.startswith("(hotline)\twaiting 0")


def test_the_queue_watch_needs_an_ami_secret(run):
    _refused(run("ami"), "ami_secret")


def test_hotline_ami_logs_in_with_events_on_and_stops_on_sigterm(tmp_path):
    """The queue watch as its own process: it logs in (events on), resyncs, and SIGTERM stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    from tests.ami_peer import AmiPeer
    from tests.test_queue_watch import queue_status

    with AmiPeer(secret="cli-secret") as peer:
        peer.script["QueueStatus"] = queue_status()
        env = dict(os.environ, HOTLINE_DATA_DIR=str(tmp_path), HOTLINE_DATABASE_URL="", HOTLINE_REDIS_URL="",
                   HOTLINE_CONFIG="", HOTLINE_AMI_SECRET="cli-secret", HOTLINE_AMI_PORT=str(peer.port),
                   HOTLINE_LOG_LEVEL="WARNING")
        subprocess.run([sys.executable, "-m", "hotline.cli", "db", "upgrade"], env=env, check=True,
                       capture_output=True, timeout=120)
        proc = subprocess.Popen([sys.executable, "-m", "hotline.cli", "ami"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert peer.wait_for(lambda: peer.received("QueueStatus"), 60), "no resync after login"
            assert peer.login_events == ["on"]
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, output.decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
