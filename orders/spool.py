"""SnapshotSpool: the last resort for a snapshot that neither the database nor Redis would take.

One JSON object per line, appended and fsync'd under an exclusive lock (``flock`` on a lock file beside
it), so that threads and processes sharing the data dir can append at once. A replay first moves the
file aside (under the same lock, so appenders never write into a file being replayed), handles its
lines in order and appends back, under the lock, the lines it could not handle. Handling is idempotent
(TicketStore.save), so a replay that crashes half way only means some snapshots get applied twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_thread_lock = threading.Lock()  # flock is per open file; this serialises threads of one process too


class SnapshotSpool:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._replay_lock_path = self.path.with_name(self.path.name + ".replay.lock")

    @contextlib.contextmanager
    def _locked(self, lock_path: Path, blocking: bool = True) -> Iterator[bool]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def append(self, data: dict[str, Any]) -> None:
        """Write one snapshot durably; raises OSError if the disk refuses."""
        self._append_lines([json.dumps(data, ensure_ascii=False, sort_keys=True)])

    def _append_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        payload = "".join(line + "\n" for line in lines).encode("utf-8")
        with _thread_lock, self._locked(self._lock_path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.path.parent)

    def pending(self) -> int:
        """How many snapshots wait in the spool (including any left by an interrupted replay)."""
        return sum(len(_read_lines(path)) for path in self._files())

    def _files(self) -> list[Path]:
        aside = sorted(self.path.parent.glob(self.path.name + ".replaying.*"))
        return aside + ([self.path] if self.path.exists() else [])

    def replay(self, handle: Callable[[dict[str, Any] | None, str], bool]) -> tuple[int, int]:
        """Feed each spooled line to ``handle(data, line)`` (data is None for a line that is not JSON);
        ``handle`` returns True once the line is taken care of. Stops at the first False and keeps that
        line and the ones after it. Returns (handled, kept). A replay already running elsewhere: (0, 0).
        """
        with self._locked(self._replay_lock_path, blocking=False) as acquired:
            if not acquired:
                return 0, 0
            with _thread_lock, self._locked(self._lock_path):
                if self.path.exists():
                    aside = self.path.with_name(f"{self.path.name}.replaying.{os.getpid()}.{os.urandom(4).hex()}")
                    os.replace(self.path, aside)
                    _fsync_dir(self.path.parent)
            handled = kept = 0
            for path in sorted(self.path.parent.glob(self.path.name + ".replaying.*")):
                lines = _read_lines(path)
                done = 0
                for line in lines:
                    try:
                        data = json.loads(line)
                    except ValueError:
                        data = None
                    if not handle(data if isinstance(data, dict) else None, line):
                        break
                    done += 1
                handled += done
                rest = lines[done:]
                kept += len(rest)
                self._append_lines(rest)
                path.unlink()
                _fsync_dir(self.path.parent)
                if rest:
                    break
            kept += sum(len(_read_lines(path)) for path in self.path.parent.glob(self.path.name + ".replaying.*"))
            return handled, kept


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
