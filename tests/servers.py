"""Throwaway PostgreSQL and Redis servers that a test may hang, kill and restart.

Never the machine's own servers: each one here runs on a port the OS picked, with its data in a temporary
directory, in its own process group, and is killed (the whole group) when its context manager ends,
whatever happened in between.

* :func:`throwaway_postgres` yields a :class:`PostgresCluster` (initdb is slow: share one per session and
  give each test its own database with :meth:`PostgresCluster.create_database`). ``hang()`` SIGSTOPs every
  process of the cluster (connections are still accepted by the kernel, nothing answers), ``resume()``
  SIGCONTs them; ``kill()`` is a crash (SIGKILL to all of them), ``start()`` brings it back on the same port
  and data directory (crash recovery).
* :func:`throwaway_redis` yields a :class:`RedisServer`: ``kill9()``, ``start()`` (from whatever is on its
  disk), ``restart_empty()``, ``snapshot()`` (a copy of its data files at this moment) and
  ``restart_from(copy)`` (kill -9, then start from that older copy).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

PG_BIN = Path(os.environ.get("HOTLINE_TEST_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("HOTLINE_TEST_FAULTS_REDIS_SERVER", "/usr/bin/redis-server")
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0  # generous: a slow CI machine, a crash recovery


class ServerError(RuntimeError):
    pass


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the test process dies (a CI timeout's kill -9 included), so no
    server outlives the run even when no finalizer gets to run."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A loopback port the OS considers free right now (bound to port 0, read, closed)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (read from /proc; psutil is not installed)."""
    try:  # fast: the kernel's list per thread (CONFIG_PROC_CHILDREN)
        tasks = os.listdir(f"/proc/{pid}/task")
        return sorted({int(c) for t in tasks
                       for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()})
    except (OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_gone(pids: list[int], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(pid_alive(p) for p in pids)


# --- PostgreSQL -----------------------------------------------------------------------------------


class PostgresCluster:
    """One PostgreSQL 15 cluster in a temporary directory, run as the ``postgres`` user."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.data = base / "data"
        self.sockets = base / "sockets"
        self.log = base / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._hung: list[int] = []
        user = pwd.getpwnam("postgres")
        self._uid, self._gid = user.pw_uid, user.pw_gid

    # -- life cycle --------------------------------------------------------------------------------

    def _as_postgres(self) -> dict:
        return {"user": self._uid, "group": self._gid, "extra_groups": [], "cwd": str(self.base)}

    def init(self) -> None:
        self.sockets.mkdir(exist_ok=True)
        os.chown(self.sockets, self._uid, self._gid)
        result = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=120, **self._as_postgres())
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr[-2000:]}")

    def start(self) -> None:
        """Start the postmaster (after a kill: crash recovery) and wait until it answers."""
        if self.running:
            return
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.sockets}",
                 "-c", "fsync=off",  # safe against a process crash (the kernel keeps the pages), fast
                 "-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=200",
                 "-c", "logging_collector=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=die_with_parent, **self._as_postgres())
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        end = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"postgres exited ({self.proc.returncode}): {self._log_tail()}")
            try:
                with psycopg.connect(self.admin_dsn("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
                time.sleep(0.1)
        raise ServerError(f"postgres did not answer within {START_TIMEOUT}s ({last}): {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, ...)."""
        if not self.running:
            return []
        found = [self.proc.pid]
        seen = {self.proc.pid}
        queue = [self.proc.pid]
        while queue:
            for child in children_of(queue.pop()):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    queue.append(child)
        return found

    def hang(self) -> None:
        """SIGSTOP the whole cluster: connections still open (the kernel's backlog), nothing answers."""
        if not self.running:
            raise ServerError("cannot hang a cluster that is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)  # first the postmaster: no new backend forks after this
        for _ in range(5):  # a backend forked just before: stop it too
            pids = self.pids()
            new = [p for p in pids if p not in self._hung]
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            self._hung.extend(new)
            if not new:
                break

    def resume(self) -> None:
        for pid in reversed(self._hung + self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._hung = []

    @property
    def hung(self) -> bool:
        return bool(self._hung)

    def kill(self) -> None:
        """A crash: SIGKILL to every process of the cluster (its whole process group)."""
        if self.proc is None:
            return
        pids = self.pids()
        kill_group(self.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        wait_gone(pids, 10)
        self._hung = []

    def stop(self) -> None:
        """The end of the session: a fast shutdown, then SIGKILL for whatever is left."""
        if self.proc is None:
            return
        self.resume()
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.kill()

    # -- databases ---------------------------------------------------------------------------------

    def admin_dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def url(self, dbname: str = "hotline") -> str:
        """The URL the hotline gets (HOTLINE_DATABASE_URL)."""
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restore(self) -> None:
        """Back to running and answering, whatever a test did to it."""
        self.resume()
        if not self.running:
            self.start()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresCluster]:
    base = Path(tempfile.mkdtemp(prefix="hotline-faults-pg-"))
    cluster = PostgresCluster(base, free_port())
    os.chown(base, cluster._uid, cluster._gid)
    try:
        cluster.init()
        cluster.start()
        cluster.create_database("hotline")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- Redis ----------------------------------------------------------------------------------------


class RedisServer:
    """One redis-server on a free port, its data in ``directory``."""

    DATA_FILES = ("dump.rdb", "appendonlydir")

    def __init__(self, directory: Path, port: int, appendonly: bool) -> None:
        self.dir = directory
        self.port = port
        self.appendonly = appendonly
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self._snapshots = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start on the same port, loading whatever data files are in its directory."""
        if self.running:
            return
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.data),
                "--daemonize", "no", "--save", "", "--protected-mode", "no", "--logfile", str(self.log)]
        if self.appendonly:  # every write on disk at once, so a copy taken now holds every write so far
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, cwd=str(self.dir),
                                     preexec_fn=die_with_parent)
        self._wait_ready()

    def client(self, **kwargs):
        import redis

        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5, socket_connect_timeout=2, **kwargs)

    def _wait_ready(self) -> None:
        import redis

        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ServerError(f"redis-server exited ({self.proc.returncode}): {self._log_tail()}")
            try:
                with contextlib.closing(self.client()) as conn:
                    if conn.ping():
                        return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise ServerError(f"redis-server did not answer within {START_TIMEOUT}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        """A crash: SIGKILL to its process group; the data files stay as they were on disk."""
        if self.proc is None:
            return
        kill_group(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def wipe(self) -> None:
        for name in self.DATA_FILES:
            path = self.data / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def restart_empty(self) -> None:
        """kill -9, then a new server on the same port with no data at all."""
        self.kill9()
        self.wipe()
        self.start()

    def snapshot(self) -> Path:
        """A copy of the server's data as of now (AOF: fsync'd on every write; RDB: SAVE first)."""
        if not self.appendonly:
            with contextlib.closing(self.client()) as conn:
                conn.save()
        self._snapshots += 1
        target = self.dir / f"snapshot-{self._snapshots}"
        target.mkdir()
        for name in self.DATA_FILES:
            path = self.data / name
            if path.is_dir():
                shutil.copytree(path, target / name)
            elif path.exists():
                shutil.copy2(path, target / name)
        return target

    def restart_from(self, snapshot: Path) -> None:
        """kill -9, then start from an older copy of the data (a Redis restored from an old backup)."""
        self.kill9()
        self.wipe()
        for name in self.DATA_FILES:
            path = snapshot / name
            if path.is_dir():
                shutil.copytree(path, self.data / name)
            elif path.exists():
                shutil.copy2(path, self.data / name)
        self.start()

    def stop(self) -> None:
        self.kill9()


@contextlib.contextmanager
def throwaway_redis(appendonly: bool = False) -> Iterator[RedisServer]:
    base = Path(tempfile.mkdtemp(prefix="hotline-faults-redis-"))
    server = RedisServer(base, free_port(), appendonly)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
