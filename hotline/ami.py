"""The queue watch (``hotline ami``): one AMI session with events on, feeding the live queue figures, the
agents' states (and so their screen pop) and the call-back list, and offering missed calls to free agents.

The AMI link's thread only translates and hands events over; one thread applies them in batches (one Redis
round trip per batch, so a burst of events does not hold up Asterisk's socket). After every (re)connect,
QueueStatus replaces what the watch believed about callers waiting and members: Asterisk is the source of
truth for who is in which queue. The day's counters stay in Redis, and a queue_log rebuild
(``hotline queue-stats rebuild``) restores them after Redis itself was lost.
"""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from ami.control import AmiQueueControl
from ami.link import AmiLink
from ami.translate import EventTranslator, snapshots_from_status
from base import metrics
from hotline.services import REDIS_PREFIX, Services
from orders.errors import StorageError
from queues.agents import AgentStoreUnavailable
from queues.callbacks import CallBackNote, FreeAgent
from queues.events import CallAnswered, CallBackDialled, CallerAbandoned, CallerGaveUp, OriginateResult

log = logging.getLogger("hotline.ami")

BATCH = 500  # events applied per Redis round trip at most
CALLBACK_ACTOR = "call-back"

_BACKLOG = metrics.gauge("hotline_queue_watch_backlog", "AMI events received and not yet applied.")
_DROPPED = metrics.counter("hotline_queue_watch_failures_total", "Batches of queue events that failed to apply, "
                           "by what failed", ["what"])


class QueueWatch:
    """Takes Asterisk's queue events into the statistics, the agents' presence and the call-back list."""

    def __init__(self, services: Services, *, link_factory: Callable[..., AmiLink] = AmiLink,
                 clock: Callable[[], float] = time.time) -> None:
        s = services.settings
        self.services = services
        self._clock = clock
        self._translator = EventTranslator(clock=clock)
        self._inbox: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self._stop = threading.Event()
        self._retry_abandons: list[CallerAbandoned | CallerGaveUp] = []
        self._first_mark = True  # the first alive mark of this process is not a loss
        self.link = link_factory(s.ami_host, s.ami_port, s.ami_username, s.ami_secret, events=True,
                                 action_timeout=s.ami_action_timeout, reconnect_max=s.ami_reconnect_max_seconds,
                                 on_event=self._receive, on_connect=self._resync)
        self.control = AmiQueueControl(self.link)
        self._threads: list[threading.Thread] = []

    # --- the AMI link's callbacks (its thread) -----------------------------------------------------------

    def _receive(self, event) -> None:
        for domain_event in self._translator.translate(event):
            self._inbox.put(domain_event)

    def _resync(self, link: AmiLink) -> None:
        """After a (re)connect: Asterisk's word on members and waiting callers replaces ours."""
        try:
            snapshots = snapshots_from_status(link.action_list("QueueStatus"), self._clock())
        except Exception as exc:  # the link reconnects and calls us again
            log.warning("queue resync after connecting failed: %s", exc)
            return
        for snapshot in snapshots:
            self._inbox.put(snapshot)
        log.info("AMI connected; %d queue(s) resynchronised from QueueStatus", len(snapshots),
                 extra={"event": "ami.resync", "queues": len(snapshots)})

    # --- applying ------------------------------------------------------------------------------------------

    def apply(self, events: list) -> None:
        """Apply a batch of domain events to every consumer; a failing consumer does not stop the others."""
        stats, presence = self.services.queue_statistics, self.services.presence
        try:
            stats.apply_many(events)
        except Exception as exc:
            _DROPPED.labels("statistics").inc()
            log.warning("queue figures not updated for %d event(s): %s", len(events), exc)
        try:
            presence.apply_many(events)
        except Exception as exc:
            _DROPPED.labels("presence").inc()
            log.warning("agents' states not updated for %d event(s): %s", len(events), exc)
        answered = [e for e in events if isinstance(e, CallAnswered)]
        if answered:
            self._call_backs("answered_after_all", answered)
        for event in events:
            if isinstance(event, (CallerAbandoned, CallerGaveUp)):
                self._record_missed(event)
            elif isinstance(event, OriginateResult):
                self._note(self._call_backs("on_originate", event))
            elif isinstance(event, CallBackDialled):
                self._note(self._call_backs("on_dialled", event))

    def _record_missed(self, event: CallerAbandoned | CallerGaveUp) -> None:
        try:
            self.services.call_backs.record_missed(event)
            if event.ticket and isinstance(event, CallerAbandoned):
                self.services.tickets.caller_left_queue(event.ticket, datetime.fromtimestamp(event.at, timezone.utc))
        except StorageError as exc:  # kept here and tried again each round until the database is back
            log.warning("missed call kept in memory until the database answers: %s", exc)
            self._retry_abandons.append(event)

    def _call_backs(self, method: str, event):
        try:
            return getattr(self.services.call_backs, method)(event)
        except StorageError as exc:
            log.warning("call-back result not recorded now: %s", exc)
            return None

    def _note(self, note: CallBackNote | None) -> None:
        if note is None or not note.ticket:
            return
        try:
            self.services.casework.note_event(note.ticket, "call_back", CALLBACK_ACTOR,
                                              {"step": note.what, "call_back": note.call_back_id, **note.details})
        except StorageError as exc:
            log.warning("call-back step not noted on ticket %s: %s", note.ticket, exc)

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.5)
            except stdqueue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except stdqueue.Empty:
                    break
            _BACKLOG.set(self._inbox.qsize())
            self.apply(batch)

    # --- call-backs ----------------------------------------------------------------------------------------

    def free_agents(self) -> list[FreeAgent]:
        """Agents available now (not paused, not on a call), with their phones and queues. A queue member
        Asterisk has but the agents' store does not (a static member, one added by hand) is never rung."""
        agents = {agent.code: agent for agent in self.services.agents.list(include_inactive=False)}
        return [FreeAgent(code, agents[code].interface, frozenset(state.queues))
                for state in self.services.presence.all_states()
                if state.state == "available" and (code := state.code) in agents]

    def offer_call_backs(self) -> int:
        """One round: missed calls kept while the database was away are recorded, then due call-backs
        are offered to free agents."""
        pending, self._retry_abandons = self._retry_abandons, []
        for event in pending:
            self._record_missed(event)
        s = self.services.settings
        try:
            notes = self.services.call_backs.offer_due(self.free_agents(), self.control,
                                                       context=s.callback_context, caller_id=s.hotline_number)
        except (StorageError, AgentStoreUnavailable) as exc:
            log.warning("call-backs not offered now: %s", exc)
            return 0
        for note in notes:
            self._note(note)
        return len(notes)

    def _call_back_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.offer_call_backs()
            except Exception:
                log.exception("offering call-backs failed; trying again later")

    # --- Redis that came back empty -------------------------------------------------------------------

    def check_redis(self) -> bool:
        """True when Redis lost what the watch wrote (it restarted empty): then members and waiting callers
        are asked of Asterisk again. The day's counters come back only from the queue_log (``hotline
        queue-stats rebuild``); that is logged once per loss."""
        redis, key = self.services.redis, f"{REDIS_PREFIX}queue-watch:alive"
        try:
            fresh = redis.set(key, "1", nx=True) is not None
        except Exception as exc:  # Redis down: nothing to do until it answers
            log.debug("Redis not answering the queue watch: %s", exc)
            return False
        first, self._first_mark = self._first_mark, False
        if not fresh or first:  # the mark was there, or this process just started
            return False
        log.error("Redis lost the live queue figures and agents' states; asking Asterisk for members and "
                  "waiting callers again. Restore today's counters with: hotline queue-stats rebuild <queue_log>",
                  extra={"event": "queue_watch.redis_lost"})
        if self.link.connected:
            self._resync(self.link)
        return True

    def _redis_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.check_redis()

    # --- running ---------------------------------------------------------------------------------------

    def start(self, call_back_seconds: float = 5.0, redis_check_seconds: float = 2.0) -> None:
        self.check_redis()
        for name, target, args in (("queue-events", self._apply_loop, ()),
                                   ("call-backs", self._call_back_loop, (call_back_seconds,)),
                                   ("redis-check", self._redis_loop, (redis_check_seconds,))):
            thread = threading.Thread(target=target, args=args, daemon=True, name=name)
            thread.start()
            self._threads.append(thread)
        self.link.start()

    def close(self) -> None:
        self._stop.set()
        self.link.close()
        for thread in self._threads:
            thread.join(timeout=5)


def run_queue_watch(services: Services, stopping: Callable[[], bool]) -> None:
    """Run until ``stopping()`` is true. A flag polled by the main thread, because a signal handler must
    not take locks (``threading.Event.set`` in a handler can deadlock: see hotline.supervisor)."""
    watch = QueueWatch(services)
    watch.start()
    try:
        while not stopping():
            time.sleep(0.2)
    finally:
        watch.close()
