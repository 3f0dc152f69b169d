"""The composition root and the AMI link: no process waits on, or fails because of, Asterisk's manager."""

from __future__ import annotations

import pytest

from config import load_settings
from hotline.agi import build_registry
from hotline.services import Services
from queues.control import NoQueueControl, QueueControlUnavailable
from tests.servers import free_port


@pytest.fixture
def services(tmp_path, engine, session_factory, redis_conn, database_url):
    def make(**overrides):
        settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, **overrides)
        return Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
    return make


def test_without_an_ami_secret_requests_say_no_link_is_configured(services):
    control = services().queue_control
    assert isinstance(control, NoQueueControl)
    with pytest.raises(QueueControlUnavailable, match="ami_secret"):
        control.pause_member("PJSIP/agent1001", True)


def test_the_fastagi_handlers_are_built_without_touching_the_ami_link(services, monkeypatch):
    made = services(ami_secret="s", ami_port=free_port())
    monkeypatch.setattr(Services, "_open_queue_control", lambda self: pytest.fail("opened at start-up"))
    assert "agent" in build_registry(made).names()


def test_a_link_that_cannot_be_opened_is_unavailable_for_that_request_and_tried_again(services, monkeypatch):
    made = services(ami_secret="s", ami_port=free_port())
    attempts = []

    def broken(self):
        attempts.append(1)
        raise ImportError("No module named 'ami'")

    monkeypatch.setattr(Services, "_open_queue_control", broken)
    for _ in range(2):
        with pytest.raises(QueueControlUnavailable, match="could not be opened"):
            made.queue_control.add_member("hotline-zh", "PJSIP/agent1001", "1001")
    assert len(attempts) == 2


def test_nothing_listening_is_unavailable_not_a_hang(services):
    made = services(ami_secret="s", ami_port=free_port(), ami_action_timeout=1.0)
    try:
        with pytest.raises(QueueControlUnavailable):
            made.queue_control.pause_member("PJSIP/agent1001", True, reason="lunch")
    finally:
        made.close()
