"""SnapshotSpool: the last resort for a snapshot that neither the database nor Redis would take.

One JSON object per line, appended and fsync'd under an exclusive lock (``flock`` on a lock file beside
it), so that threads and processes sharing the data dir can append at once. A replay first moves the
file aside (under the same lock, so appenders never write into a file being replayed), handles its
lines in order and appends back, under the lock, the lines it could not handle. Handling is idempotent
(TicketStore.save), so a replay that crashes half way only means some snapshots get applied twice.

The spool is the primary place for a snapshot the database would not take (orders.writer): it lives on
the local disk, fsync'd, so it survives a Redis that loses its data and a process that exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_thread_lock = threading.Lock()  # flock is per open file; this serialises threads of one process too

#: What a replay's ``handle`` returns for a line: taken care of (removed from the spool), kept for a
#: later replay while the replay goes on, or kept together with every line after it (the replay stops).
DONE = "done"
KEEP = "keep"
STOP = "stop"

_NUMBER_FIELD = re.compile(r'"number":\s*"([0-9]+)"')


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

    def has_pending(self) -> bool:
        """Whether anything may wait in the spool (cheap: looks at file sizes only)."""
        try:
            if self.path.stat().st_size > 0:
                return True
        except FileNotFoundError:
            pass
        return any(True for _ in self.path.parent.glob(self.path.name + ".replaying.*"))

    def highest_number(self, prefix: str, max_length: int) -> int:
        """The largest spooled ticket number that starts with ``prefix`` and is at most ``max_length``
        digits long, as the integer after the prefix; 0 if none (orders.ticket_numbers' floor)."""
        highest = 0
        for path in self._files():
            for line in _read_lines(path):
                match = _NUMBER_FIELD.search(line)
                if match is None:
                    continue
                number = match.group(1)
                if number.startswith(prefix) and len(prefix) < len(number) <= max_length:
                    highest = max(highest, int(number[len(prefix):]))
        return highest

    def pending(self) -> int:
        """How many snapshots wait in the spool (including any left by an interrupted replay)."""
        return sum(len(_read_lines(path)) for path in self._files())

    def _files(self) -> list[Path]:
        return self._aside_files() + ([self.path] if self.path.exists() else [])

    def replay(self, handle: Callable[[dict[str, Any] | None, str], Any]) -> tuple[int, int]:
        """Feed each spooled line to ``handle(data, line)`` (data is None for a line that is not JSON).

        ``handle`` returns DONE (or True) once the line is taken care of, KEEP to keep that line and go
        on with the next, STOP (or False) to keep that line and every one after it. Returns (handled,
        kept). A replay already running elsewhere: (0, 0).
        """
        with self._locked(self._replay_lock_path, blocking=False) as acquired:
            if not acquired:
                return 0, 0
            probe: tuple[str, Any] | None = None
            if not self._aside_files():
                # Probe with the oldest line in place first: while nothing takes it (the database still
                # down), the spool is left as it is instead of being moved aside and written back.
                first = _first_line(self.path)
                if first is None:
                    return 0, 0
                verdict = handle(_parse(first), first)
                if not (verdict is True or verdict in (DONE, KEEP)):
                    return 0, self.pending()
                probe = (first, verdict)
            with _thread_lock, self._locked(self._lock_path):
                if self.path.exists():
                    aside = self.path.with_name(f"{self.path.name}.replaying.{os.getpid()}.{os.urandom(4).hex()}")
                    os.replace(self.path, aside)
                    _fsync_dir(self.path.parent)
            handled = kept = 0
            for path in self._aside_files():
                lines = _read_lines(path)
                rest: list[str] = []
                stopped = False
                for index, line in enumerate(lines):
                    if probe is not None and index == 0 and line == probe[0]:
                        verdict = probe[1]  # the probe already handled it: not twice
                    else:
                        verdict = handle(_parse(line), line)
                    probe = None
                    if verdict is True or verdict == DONE:
                        handled += 1
                    elif verdict == KEEP:
                        rest.append(line)
                    else:
                        rest.extend(lines[index:])
                        stopped = True
                        break
                kept += len(rest)
                self._append_lines(rest)
                path.unlink()
                _fsync_dir(self.path.parent)
                if stopped:
                    break
            kept += sum(len(_read_lines(path)) for path in self._aside_files())
            return handled, kept

    def _aside_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.name + ".replaying.*"))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _first_line(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.rstrip("\n")
    except FileNotFoundError:
        return None
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    # Only "\n" ends a line: str.splitlines() would also cut a snapshot at a U+2028 inside a field.
    return [line for line in text.split("\n") if line.strip()]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
