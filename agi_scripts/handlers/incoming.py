"""``agi://host:4573/incoming``: a citizen's call to 12345.

Opens a ticket for the call, runs the IVR, picks the queue and priority, and hands the choice back to
the dialplan as channel variables. Whatever fails here, the caller is never stranded: the ticket
number is set first, a fallback queue is set (and the call handed back) before any wait on storage
when the handler cannot decide, and a hang-up still leaves a ticket, abandoned in IVR with the
choices made so far; a caller whose ``HANGUP`` came before the queue was set is never counted as
routed. Odd ``agi_*`` values are cleaned to fit the ticket rather than cost it. A database outage
defers the ticket write (orders.writer).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from agi_scripts import variables
from agi_scripts.channel import HotlineAGI
from agi_scripts.ivr_driver import run_ivr
from asterisk import agi as pyst
from base import metrics
from ivr.actions import CallerHungUp
from ivr.engine import CallState, Engine
from ivr.menu import load_menu
from orders.caller import CallerNumber, normalise_caller
from orders.errors import StorageError, TicketNumberUnavailable
from orders.lifecycle import CallOutcome, TicketStatus
from orders.snapshot import TicketSnapshot, fit_text
from queues.routing import QueueChoice, RoutingRules

log = logging.getLogger("hotline.agi.incoming")

_CALLS = metrics.counter("hotline_incoming_calls_total", "Calls through the incoming handler by outcome",
                         ["outcome"])


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IncomingCall:
    engine: Engine
    rules: RoutingRules
    tickets: object  # orders.store.TicketStore: status_of
    writer: object  # orders.writer.TicketWriter: save_later
    numbers: object  # orders.ticket_numbers.TicketNumberAllocator: next
    repeat_callers: object  # orders.repeat_callers.RepeatCallers: ask
    region: str = "CN"
    local_area_code: str | None = None  # reads a caller's local landline number without its area code
    clock: Callable[[], datetime] = _utcnow

    def handle(self, agi: HotlineAGI) -> None:
        env = agi.environment
        started = self.clock()
        caller = normalise_caller(env.get("agi_callerid"), self.region, self.local_area_code)
        ticket = self._open_ticket(env, caller, started)
        repeat = None
        progress = _Progress()  # the caller's choices so far, for a ticket written after a failure
        handed_over = closed = False  # closed: the ticket's end-of-IVR state is saved
        try:
            if ticket is not None:
                agi.set_variable(variables.HOTLINE_TICKET, ticket.number)
                if ticket.has_call:
                    # The agi_* block has no linkedid; AMI queue events and CDRs join calls on it.
                    linkedid = fit_text("linkedid", agi.get_variable(variables.CHANNEL_LINKEDID)) or None
                    ticket = dataclasses.replace(ticket, linkedid=linkedid)
                # Database work runs beside the IVR, not between the caller's key presses.
                self.writer.save_later(ticket)
                repeat = self.repeat_callers.ask(caller.e164, ticket.number, self.clock())
            state = run_ivr(agi, self.engine, self._status_of, progress.note)
            if state.route is not None and not state.abandoned:
                choice = self.rules.choose(state.language, state.route.category, state.route.urgency,
                                           _result(repeat, default=False))
                handed_over = self._hand_to_queue(agi, choice)
                if handed_over:
                    agi.release()  # the caller goes on to the queue; the ticket is saved after
                else:  # a HANGUP came before the queue was set: the dialplan runs only its h extension
                    state = self._gone(state)
            if state.abandoned:
                outcome, status, ended = CallOutcome.abandoned_in_ivr, TicketStatus.abandoned_in_ivr, True
            elif state.route is not None:
                outcome, status, ended = CallOutcome.routed, TicketStatus.queued, False
            else:  # the caller heard a ticket's status and said goodbye
                outcome, status, ended = CallOutcome.status_given, TicketStatus.closed, True
            closed = True
            self._finish(ticket, state, status, outcome, ended)
            _CALLS.labels(outcome.value).inc()
            if outcome is CallOutcome.status_given and not agi.hung_up:
                agi.hangup()
        except pyst.AGIHangup:  # ChannelHungUp, ConnectionClosed: the caller is gone
            if not closed and not handed_over:
                closed = True
                self._finish(ticket, self._gone(progress.state), TicketStatus.abandoned_in_ivr,
                             CallOutcome.abandoned_in_ivr)
                _CALLS.labels(CallOutcome.abandoned_in_ivr.value).inc()
            raise
        except Exception:
            log.exception("incoming call handler failed", extra={"event": "incoming.fallback",
                                                                 "ticket": ticket.number if ticket else None})
            if closed or handed_over:
                return
            # A bug or an outage we did not foresee: the caller still reaches an agent, before any storage wait.
            gone = agi.hung_up or (progress.state is not None and progress.state.abandoned)
            if not gone:
                gone = not self._fall_back(agi, ticket)
            if gone:
                self._finish(ticket, self._gone(progress.state), TicketStatus.abandoned_in_ivr,
                             CallOutcome.abandoned_in_ivr)
                _CALLS.labels(CallOutcome.abandoned_in_ivr.value).inc()
            else:
                self._finish(ticket, progress.state, TicketStatus.queued, CallOutcome.fallback, ended=False)
                _CALLS.labels(CallOutcome.fallback.value).inc()

    # -- the steps ---------------------------------------------------------------------------------

    def _open_ticket(self, env, caller: CallerNumber, now: datetime) -> TicketSnapshot | None:
        try:
            number = self.numbers.next(now)
        except TicketNumberUnavailable:
            log.error("no ticket number could be allocated (Redis and database both unreachable); "
                      "the call goes on without a ticket",
                      extra={"event": "incoming.no_ticket_number",
                             "uniqueid": fit_text("uniqueid", env.get("agi_uniqueid"))})
            return None
        # Asterisk passes on whatever a carrier sent: keep what fits the columns rather than lose the ticket.
        uniqueid = fit_text("uniqueid", env.get("agi_uniqueid")) or None
        call = dict(uniqueid=uniqueid, call_channel=fit_text("call_channel", env.get("agi_channel")) or None,
                    dialed_number=_known(fit_text("dialed_number", env.get("agi_dnid"))), started_at=now)
        return TicketSnapshot(
            number=number, revision=1, caller_raw=caller.raw, caller_e164=caller.e164, caller_kind=caller.kind,
            created_at=now, language=self.engine.menu.default_language, status=TicketStatus.in_ivr.value,
            confidential=presentation_restricted(env.get("agi_callingpres")),
            **(call if uniqueid is not None else {}),  # without a uniqueid there is no call record to fill
        )

    def _status_of(self, number: str) -> str | None:
        try:
            return self.tickets.status_of(number)
        except StorageError:
            return None

    def _hand_to_queue(self, agi: HotlineAGI, choice: QueueChoice) -> bool:
        """Set the queue variables; False when a ``HANGUP`` came first (the caller never reaches the queue)."""
        # HOTLINE_LANG is already set: the IVR driver sets it with every change of language.
        if agi.hung_up:
            return False
        agi.set_variable(variables.HOTLINE_PRIORITY, choice.priority)
        agi.set_variable(variables.HOTLINE_QUEUE, choice.queue)  # last: the dialplan's sign that all is set
        # A HANGUP line read before these replies means the caller left before the queue was set.
        return not agi.hung_up

    def _fall_back(self, agi: HotlineAGI, ticket: TicketSnapshot | None) -> bool:
        """Send the caller to the default queue and hand the call back; False when the caller is gone."""
        agi.deadline = None  # past its time budget or not, the session still hands the caller on
        try:
            if ticket is not None:
                agi.set_variable(variables.HOTLINE_TICKET, ticket.number)
            if not self._hand_to_queue(agi, QueueChoice(self.rules.default_queue, self.rules.priority_normal)):
                return False
            agi.release()
        except pyst.AGIHangup:
            return False
        except Exception:
            log.exception("the default queue could not be set", extra={"event": "incoming.fallback_failed",
                                                                       "ticket": ticket.number if ticket else None})
            agi.release()  # the dialplan's own default queue takes the caller
        return True

    def _gone(self, state: CallState | None) -> CallState | None:
        """``state`` as the engine ends it for a caller who hung up there, keeping their choices."""
        if state is None or state.abandoned or (state.finished and state.route is None):
            return state
        return self.engine.advance(state, CallerHungUp()).state

    def _finish(self, ticket: TicketSnapshot | None, state: CallState | None,
                status: TicketStatus, outcome: CallOutcome, ended: bool = True) -> None:
        """Save the ticket's state at the end of the IVR. Its revision supersedes the opening save's, in
        whichever order the writer's threads get to them, so nothing here waits for the database."""
        if ticket is None:
            return
        now = self.clock()
        changes = {"status": status.value}
        if ticket.has_call:
            changes["outcome"] = outcome.value
            if ended:
                changes["ended_at"] = now
        if state is not None:
            changes.update(language=state.language, ivr_path=fit_text("ivr_path", state.path_text))
            if state.route is not None:
                changes.update(category=fit_text("category", state.route.category), urgency=state.route.urgency)
            elif outcome is CallOutcome.status_given:
                changes.update(category="status")
        self.writer.save_later(ticket.next(now, **changes))


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


def presentation_restricted(callingpres: str | None) -> bool:
    """Whether ``agi_callingpres`` says the caller withheld their number (presentation restricted).

    Bits 5-6 are the presentation (0x00 allowed, 0x20 restricted, 0x40 unavailable), bits 0-1 the
    screening: 32-35 are restricted. "Unavailable" (64-67) means the network has no number, not a wish.
    """
    try:
        value = int(str(callingpres).strip())
    except ValueError:
        return False
    return value & 0x60 == 0x20


class _Progress:
    """The IVR state of one call as it goes (run_ivr reports each state)."""

    def __init__(self) -> None:
        self.state: CallState | None = None

    def note(self, state: CallState) -> None:
        self.state = state
