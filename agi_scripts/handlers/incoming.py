"""``agi://host:4573/incoming``: a citizen's call to 12345.

Opens a ticket for the call, runs the IVR, picks the queue and priority, and hands the choice back to
the dialplan as channel variables. Whatever fails here, the caller is never stranded: the ticket
number is set first, a fallback queue is set when the handler cannot decide, and a hang-up in the IVR
still leaves a ticket (abandoned in IVR). A database outage defers the ticket write (orders.writer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from agi_scripts import variables
from agi_scripts.channel import ChannelHungUp, HotlineAGI
from agi_scripts.ivr_driver import run_ivr
from asterisk import agi as pyst
from hotline import metrics
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

    @classmethod
    def from_services(cls, services) -> "IncomingCall":
        from orders.ticket_numbers import TicketNumberAllocator
        from orders.writer import writer_for

        s = services.settings
        return cls(engine=Engine(load_menu(s.menu)), rules=RoutingRules.from_settings(s), tickets=services.tickets,
                   writer=writer_for(services), numbers=TicketNumberAllocator(services.redis, services.session_factory),
                   region=s.region, repeat_window=timedelta(hours=s.repeat_caller_hours))

    def handle(self, agi: HotlineAGI) -> None:
        env = agi.environment
        started = self.clock()
        caller = normalise_caller(env.get("agi_callerid"), self.region)
        ticket = self._open_ticket(env, caller, started)
        queue_set = False
        try:
            if ticket is not None:
                agi.set_variable(variables.HOTLINE_TICKET, ticket.number)
                self._save(ticket)
            state = run_ivr(agi, self.engine, self._status_of)
            if state.route is not None:
                choice = self._choose(state, caller, ticket)
                self._hand_to_queue(agi, choice, state.language)
                queue_set = True
                ticket = self._finish(ticket, state, TicketStatus.queued, CallOutcome.routed, ended=False)
                _CALLS.labels("routed").inc()
            elif state.abandoned:
                ticket = self._finish(ticket, state, TicketStatus.abandoned_in_ivr, CallOutcome.abandoned_in_ivr)
                _CALLS.labels("abandoned_in_ivr").inc()
            else:  # the caller heard a ticket's status and said goodbye
                ticket = self._finish(ticket, state, TicketStatus.closed, CallOutcome.status_given)
                _CALLS.labels("status_given").inc()
                agi.hangup()
        except (ChannelHungUp, pyst.AGIHangup):
            if ticket is not None and ticket.status == TicketStatus.in_ivr.value:
                self._finish(ticket, None, TicketStatus.abandoned_in_ivr, CallOutcome.abandoned_in_ivr)
            _CALLS.labels("abandoned_in_ivr").inc()
            raise
        except Exception:
            # A bug or an outage we did not foresee: the caller still reaches an agent.
            log.exception("incoming call handler failed; sending the caller to the default queue",
                          extra={"event": "incoming.fallback", "ticket": ticket.number if ticket else None})
            _CALLS.labels("fallback").inc()
            if ticket is not None and ticket.status == TicketStatus.in_ivr.value:
                self._finish(ticket, None, TicketStatus.queued, CallOutcome.fallback, ended=False)
            if not queue_set:
                self._hand_to_queue(agi, QueueChoice(self.rules.default_queue, self.rules.priority_normal), None)

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
            uniqueid=env.get("agi_uniqueid") or None, linkedid=env.get("agi_linkedid") or None,
            call_channel=env.get("agi_channel") or None, dialed_number=_known(env.get("agi_dnid")),
            started_at=now,
        )

    def _status_of(self, number: str) -> str | None:
        try:
            return self.tickets.status_of(number)
        except StorageError:
            return None

    def _choose(self, state: CallState, caller: CallerNumber, ticket: TicketSnapshot | None) -> QueueChoice:
        try:
            repeat = self.tickets.called_recently(caller.e164, self.repeat_window, now=self.clock(),
                                                  exclude_number=ticket.number if ticket else None)
        except StorageError:
            repeat = False
        return self.rules.choose(state.language, state.route.category, state.route.urgency, repeat)

    def _hand_to_queue(self, agi: HotlineAGI, choice: QueueChoice, language: str | None) -> None:
        if language:
            agi.set_variable(variables.HOTLINE_LANG, language)
        agi.set_variable(variables.HOTLINE_PRIORITY, choice.priority)
        agi.set_variable(variables.HOTLINE_QUEUE, choice.queue)  # last: the dialplan's sign that all is set

    def _finish(self, ticket: TicketSnapshot | None, state: CallState | None, status: TicketStatus,
                outcome: CallOutcome, ended: bool = True) -> TicketSnapshot | None:
        if ticket is None:
            return None
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
        ticket = ticket.next(now, **changes)
        self._save(ticket)
        return ticket

    def _save(self, ticket: TicketSnapshot) -> None:
        how = self.writer.save(ticket)
        _WRITES.labels(str(getattr(how, "value", how))).inc()


def _known(value: str | None) -> str | None:
    return None if not value or value == "unknown" else value
