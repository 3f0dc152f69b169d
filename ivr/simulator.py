"""A driver without a phone: runs a call through the engine from scripted keys, for tests and the CLI."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from ivr.actions import (
    Action,
    CallerHungUp,
    Collect,
    Digits,
    Hangup,
    LookupTicket,
    Play,
    PromptUnavailable,
    Route,
    TicketStatus,
)
from ivr.engine import CallState, Engine


@dataclass(frozen=True)
class Transcript:
    """Every action the engine asked for during one simulated call, and the final state."""

    actions: tuple[Action, ...]
    state: CallState

    @property
    def final(self) -> Route | Hangup | None:
        return self.state.route or self.state.hangup

    def prompts(self) -> list[str]:
        """Prompt ids in the order the caller would hear them (played or collected)."""
        return [a.prompt for a in self.actions if isinstance(a, (Play, Collect))]


def simulate(
    engine: Engine,
    keys: Iterable[str] = (),
    tickets: Mapping[str, str | None] | None = None,
    hang_up_after: int | None = None,
    missing_prompts: Collection[str] = (),
) -> Transcript:
    """Run one call: each ``Collect`` takes the next keys ("" once they run out, i.e. silence),
    each ``LookupTicket`` is answered from ``tickets`` (number -> status; absent = no such ticket),
    and the caller hangs up after ``hang_up_after`` inputs if given. A ``Collect`` of a prompt in
    ``missing_prompts`` is answered ``PromptUnavailable`` (as a driver lacking its sound). The engine
    bounds the call."""
    pending = iter(keys)
    tickets = tickets or {}
    step = engine.start()
    actions = list(step.actions)
    inputs = 0
    while not step.state.finished:
        waiting = step.actions[-1]
        if hang_up_after is not None and inputs >= hang_up_after:
            answer = CallerHungUp()
        elif isinstance(waiting, LookupTicket):
            answer = TicketStatus(waiting.number, tickets.get(waiting.number))
        elif waiting.prompt in missing_prompts:
            answer = PromptUnavailable(waiting.prompt)
        else:
            answer = Digits(next(pending, ""))
        step = engine.advance(step.state, answer)
        actions.extend(step.actions)
        inputs += 1
    return Transcript(tuple(actions), step.state)
