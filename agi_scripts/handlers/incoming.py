"""``agi://host:4573/incoming``: a citizen's call to 12345.

Opens a ticket for the call, runs the IVR, picks the queue and priority, and hands the choice back to
the dialplan as channel variables. Whatever fails here, the caller is never stranded: the ticket
number is set first, a fallback queue is set when the handler cannot decide, and a hang-up in the IVR
still leaves a ticket (abandoned in IVR). A database outage defers the ticket write (orders.writer).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from agi_scripts import variables
from agi_scripts.channel import HotlineAGI
from agi_scripts.ivr_driver import run_ivr
from asterisk import agi as pyst
from base import metrics
from ivr.engine import CallState, Engine
from ivr.menu import load_menu
from orders.caller import CallerNumber, normalise_caller
from orders.errors import StorageError, TicketNumberUnavailable
from orders.lifecycle import CallOutcome, TicketStatus
from orders.snapshot import TicketSnapshot
from queues.routing import QueueChoice, RoutingRules

log = logging.getLogger("hotline.agi.incoming")

_CALLS = metrics.counter("hotline_incoming_calls_total", "Calls through the incoming handler by outcome",
                         ["outcome"])
_WRITES = metrics.counter("hotline_ticket_writes_total", "Ticket saves from calls by how they were kept",
                          ["how"])


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IncomingCall:
    engine: Engine
    rules: RoutingRules
    tickets: object  # orders.store.TicketStore: status_of, called_recently
    writer: object  # orders.writer.TicketWriter: save
    numbers: object  # orders.ticket_numbers.TicketNumberAllocator: next
    region: str = "CN"
    repeat_window: timedelta = timedelta(hours=24)
    clock: Callable[[], datetime] = _utcnow
    background: Executor = field(default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="ticket-io"))

    def handle(self, agi: HotlineAGI) -> None:
        env = agi.environment
        started = self.clock()
        caller = normalise_caller(env.get("agi_callerid"), self.region)
        ticket = self._open_ticket(env, caller, started)
        opened = repeat = None
        queue_set = closed = False  # closed: the ticket's end-of-IVR state is saved
        try:
            if ticket is not None:
                agi.set_variable(variables.HOTLINE_TICKET, ticket.number)
                # The agi_* block has no linkedid; AMI queue events and CDRs join calls on it.
                ticket = dataclasses.replace(ticket, linkedid=agi.get_variable(variables.CHANNEL_LINKEDID) or None)
                # Database work runs beside the IVR, not between the caller's key presses.
                opened = self.background.submit(self._save, ticket)
                repeat = self.background.submit(self._repeat_caller, caller, ticket.number)
            state = run_ivr(agi, self.engine, self._status_of)
            if state.route is not None:
                choice = self.rules.choose(state.language, state.route.category, state.route.urgency,
                                           _result(repeat, default=False))
                self._hand_to_queue(agi, choice)
                queue_set = True
                agi.release()  # the caller goes on to the queue; the ticket is saved after
                outcome, status, ended = CallOutcome.routed, TicketStatus.queued, False
            elif state.abandoned:
                outcome, status, ended = CallOutcome.abandoned_in_ivr, TicketStatus.abandoned_in_ivr, True
            else:  # the caller heard a ticket's status and said goodbye
                outcome, status, ended = CallOutcome.status_given, TicketStatus.closed, True
            self._finish(ticket, opened, state, status, outcome, ended)
            closed = True
            _CALLS.labels(outcome.value).inc()
            if outcome is CallOutcome.status_given:
                agi.hangup()
        except pyst.AGIHangup:  # ChannelHungUp, ConnectionClosed: the caller is gone
            if not closed and not queue_set:
                self._finish(ticket, opened, None, TicketStatus.abandoned_in_ivr, CallOutcome.abandoned_in_ivr)
                _CALLS.labels(CallOutcome.abandoned_in_ivr.value).inc()
            raise
        except Exception:
            # A bug or an outage we did not foresee: the caller still reaches an agent.
            log.exception("incoming call handler failed; sending the caller to the default queue",
                          extra={"event": "incoming.fallback", "ticket": ticket.number if ticket else None})
            _CALLS.labels(CallOutcome.fallback.value).inc()
            if not queue_set:
                if not closed:
                    self._finish(ticket, opened, None, TicketStatus.queued, CallOutcome.fallback, ended=False)
                agi.deadline = None  # past its time budget or not, the session still hands the caller on
                if ticket is not None:
                    agi.set_variable(variables.HOTLINE_TICKET, ticket.number)
                self._hand_to_queue(agi, QueueChoice(self.rules.default_queue, self.rules.priority_normal))

    # -- the steps ---------------------------------------------------------------------------------

    def _open_ticket(self, env, caller: CallerNumber, now: datetime) -> TicketSnapshot | None:
        try:
            number = self.numbers.next(now)
        except TicketNumberUnavailable:
            log.error("no ticket number could be allocated (Redis and database both unreachable); "
                      "the call goes on without a ticket", extra={"event": "incoming.no_ticket_number",
                                                                 "uniqueid": env.get("agi_uniqueid")})
            return None
        return TicketSnapshot(
            number=number, revision=1, caller_raw=caller.raw, caller_e164=caller.e164, caller_kind=caller.kind,
            created_at=now, language=self.engine.menu.default_language, status=TicketStatus.in_ivr.value,
            uniqueid=env.get("agi_uniqueid") or None,
            call_channel=env.get("agi_channel") or None, dialed_number=_known(env.get("agi_dnid")),
            started_at=now,
        )

    def _status_of(self, number: str) -> str | None:
        try:
            return self.tickets.status_of(number)
        except StorageError:
            return None

    def _repeat_caller(self, caller: CallerNumber, number: str) -> bool:
        try:
            return self.tickets.called_recently(caller.e164, self.repeat_window, now=self.clock(),
                                                exclude_number=number)
        except StorageError:
            return False

    def _hand_to_queue(self, agi: HotlineAGI, choice: QueueChoice) -> None:
        # HOTLINE_LANG is already set: the IVR driver sets it with every change of language.
        agi.set_variable(variables.HOTLINE_PRIORITY, choice.priority)
        agi.set_variable(variables.HOTLINE_QUEUE, choice.queue)  # last: the dialplan's sign that all is set

    def _finish(self, ticket: TicketSnapshot | None, opened: Future | None, state: CallState | None,
                status: TicketStatus, outcome: CallOutcome, ended: bool = True) -> None:
        """Save the ticket's state at the end of the IVR (after the opening save, which it supersedes)."""
        if ticket is None:
            return
        now = self.clock()
        changes = {"status": status.value, "outcome": outcome.value}
        if state is not None:
            changes.update(language=state.language, ivr_path=state.path_text)
            if state.route is not None:
                changes.update(category=state.route.category, urgency=state.route.urgency)
            elif outcome is CallOutcome.status_given:
                changes.update(category="status")
        if ended:
            changes["ended_at"] = now
        _result(opened, default=None, timeout=None)
        self._save(ticket.next(now, **changes))

    def _save(self, ticket: TicketSnapshot) -> None:
        how = self.writer.save(ticket)
        _WRITES.labels(str(getattr(how, "value", how))).inc()


def _result(future: Future | None, default, timeout: float | None = 2.0):
    """A background lookup's answer, or ``default`` when it is missing, failed or late."""
    if future is None:
        return default
    try:
        return future.result(timeout=timeout)
    except Exception:
        log.warning("a background ticket task failed or was late", exc_info=True,
                    extra={"event": "incoming.background_failed"})
        return default


def _known(value: str | None) -> str | None:
    return None if not value or value == "unknown" else value
