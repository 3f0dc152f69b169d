"""A throwaway redis-server for tests that kill and restart Redis (never the machine's own on 6379).

It listens on a loopback port the OS picked, keeps its data in a temporary directory, runs in its own
process group and is killed when the ``throwaway_redis`` context ends. ``kill9()`` is a crash,
``start()`` brings it back on the same port from whatever is on its disk, ``restart_empty()`` from
nothing, ``copy_data()`` takes a copy of its data files now and ``restart_from(copy)`` brings it back from
that older copy (a Redis restored from an old backup, or one that lost its last writes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import redis

REDIS_SERVER = os.environ.get("HOTLINE_TEST_REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")
_START_TIMEOUT = 30.0
_DATA_FILES = ("dump.rdb", "appendonly.aof", "appendonlydir")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self._copies = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
                "--protected-mode", "no", "--logfile", str(self.base / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with contextlib.closing(self.client()) as conn:
                    if conn.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in time")

    def kill9(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def _wipe(self) -> None:
        for name in _DATA_FILES:
            path = self.data / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def restart_empty(self) -> None:
        self.kill9()
        self._wipe()
        self.start()

    def copy_data(self) -> Path:
        """A copy of the data files as they are now (appendfsync always: every write so far)."""
        self._copies += 1
        target = self.base / f"copy-{self._copies}"
        target.mkdir()
        for name in _DATA_FILES:
            path = self.data / name
            if path.is_dir():
                shutil.copytree(path, target / name)
            elif path.exists():
                shutil.copy2(path, target / name)
        return target

    def restart_from(self, copy: Path) -> None:
        self.kill9()
        self._wipe()
        for name in _DATA_FILES:
            path = copy / name
            if path.is_dir():
                shutil.copytree(path, self.data / name)
            elif path.exists():
                shutil.copy2(path, self.data / name)
        self.start()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    base = Path(tempfile.mkdtemp(prefix="hotline-test-redis-"))
    server = RedisServer(base)
    try:
        server.start()
        yield server
    finally:
        server.kill9()
        shutil.rmtree(base, ignore_errors=True)
