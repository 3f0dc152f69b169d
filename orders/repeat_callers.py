"""RepeatCallers: whether a caller opened a ticket recently, asked by calls in progress and answered in batches.

Every call asks, beside its IVR, so that a repeat caller's priority can be raised when the call is queued.
One query per call, each on a thread of a pool, cost the FastAGI server about 0.3 ms of CPU a call, more
than the query itself: waking a thread for every call is dear under load (bench/agi_layers.py). Here one
thread collects the questions that arrive within ``linger`` (or ``max_batch`` of them) and answers them
all with one query.

A database that fails answers "no" (the caller keeps the normal priority), as a lookup that comes too
late does: the call is never held up for it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timedelta

from orders.errors import StorageError

log = logging.getLogger(__name__)

DEFAULT_LINGER = 0.005
DEFAULT_MAX_BATCH = 256


class RepeatCallers:
    """Answers :meth:`ask` for ``store`` (a TicketStore: ``recent_tickets``) over the last ``window``."""

    def __init__(self, store, window: timedelta, *, linger: float = DEFAULT_LINGER,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._store = store
        self.window = window
        self._linger = max(0.0, linger)
        self._max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._asked: list[tuple[str, str, datetime, Future]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def ask(self, caller_e164: str | None, number: str, now: datetime) -> Future:
        """A future of whether ``caller_e164`` opened a ticket other than ``number`` in ``window`` before ``now``."""
        future: Future = Future()
        with self._cond:
            if not caller_e164 or self._closed:
                future.set_result(False)
                return future
            self._asked.append((caller_e164, number, now, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="repeat-callers", daemon=True)
                self._thread.start()
            if len(self._asked) == 1 or len(self._asked) >= self._max_batch:
                self._cond.notify()
        return future

    def close(self) -> None:
        """Stop; questions still waiting are answered "no"."""
        with self._cond:
            self._closed = True
            asked, self._asked = self._asked, []
            self._cond.notify_all()
        for *_, future in asked:
            future.set_result(False)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._asked and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline = time.monotonic() + self._linger  # let the calls arriving meanwhile join
                while len(self._asked) < self._max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._asked = self._asked[:self._max_batch], self._asked[self._max_batch:]
            self._answer(batch)

    def _answer(self, batch: list[tuple[str, str, datetime, Future]]) -> None:
        try:
            seen = self._store.recent_tickets([caller for caller, *_ in batch],
                                              min(now for _, _, now, _ in batch) - self.window)
        except StorageError:
            seen = []
        except Exception as exc:  # a bug: each call gets "no" through its future's error (it is logged there)
            for *_, future in batch:
                future.set_exception(exc)
            return
        tickets: dict[str, list[tuple[str, datetime]]] = {}
        for caller, number, created_at in seen:
            tickets.setdefault(caller, []).append((number, created_at))
        for caller, number, now, future in batch:
            since = now - self.window
            future.set_result(any(other != number and created_at >= since
                                  for other, created_at in tickets.get(caller, ())))
