"""The IVR engine: a pure state machine from (state, input) to (actions, next state).

Every ``Step`` holds zero or more ``Play``/``SetLanguage`` actions, then exactly one of
``Collect`` or ``LookupTicket`` (the engine waits for the driver's input) or ``Route``/``Hangup``
(final: ``state.finished`` is True). The engine keeps no per-call data itself, so one ``Engine``
serves any number of calls, and a call's ``CallState`` can be kept anywhere between inputs.

Safety nets, so that no caller is lost or looped:

* A wrong or missing key counts as a failure of the node; the node is replayed (after its
  invalid/no-input prompt) until ``max_failures``, then the caller goes to the node's ``on_failure``
  (by default the menu's ``fallback`` agent route).
* After ``max_inputs`` inputs in one call the caller goes to the ``fallback`` route, whatever
  the menu says.
* An input of the wrong kind for what the engine waits for (a ``TicketStatus`` while a menu
  waits for keys, or the status of another ticket) sends the caller to the ``fallback`` route.
* ``CallerHungUp`` at any point finishes the call with ``abandoned=True`` and the final action
  ``Hangup(reason="caller")``; a driver whose channel is already gone need not send it to Asterisk.
  It is also taken after a ``Route`` (the caller hung up during the route's prompt or before the
  driver handed them over): the state keeps the ``route`` the caller chose and becomes abandoned.
* ``PromptUnavailable`` (the driver could not play what a node asks) sends the caller to the
  ``fallback`` route in the current language: a caller who cannot hear the menu needs a person.

Path tokens recorded in ``CallState.path`` are ``<node>:<key>`` for a menu choice and
``<node>:timeout``, ``<node>:invalid``, ``<node>:number`` (a ticket number was entered; the number
itself is in ``ticket_number``, not in the path), ``<node>:<status>`` or ``<node>:not-found``
(the lookup answer), ``<node>:hangup``, ``<node>:prompt-missing``, ``<node>:limit`` and
``<node>:unexpected``. Invalid keys are never recorded: a caller may type a phone number into a menu.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    SetLanguage,
    TicketStatus,
)
from ivr.errors import CallFinishedError, InputError, MenuError
from ivr.menu import (
    AnnouncementNode,
    HangupNode,
    Menu,
    MenuNode,
    RouteNode,
    TicketStatusNode,
    Transition,
)

CALLER_HANGUP = Hangup(reason="caller")

# What the engine waits for (CallState.awaiting).
AWAIT_CHOICE = "choice"
AWAIT_TICKET_NUMBER = "ticket-number"
AWAIT_TICKET_STATUS = "ticket-status"


@dataclass(frozen=True)
class CallState:
    """Where one call stands in the IVR. Immutable: the engine returns a new one per step.

    ``node`` is the current node id, ``language`` the prompt language, ``path`` the caller's way
    (see the module docstring), ``failures`` the wrong/missing inputs in a row on this node, ``steps``
    the inputs taken so far, ``awaiting`` what the engine waits for ("choice", "ticket-number",
    "ticket-status"; "" once finished), ``ticket_number`` the last number entered on a ticket-status
    node (kept after the lookup, so an agent reached from the status options can see it).
    Once ``finished``, ``route`` or ``hangup`` is set; ``abandoned`` means the caller hung up (then
    ``hangup`` is ``Hangup("caller")``, and ``route`` still holds the route the caller had reached, if any).
    """

    node: str
    language: str
    path: tuple[str, ...] = ()
    failures: int = 0
    steps: int = 0
    awaiting: str = ""
    ticket_number: str | None = None
    finished: bool = False
    route: Route | None = None
    hangup: Hangup | None = None
    abandoned: bool = False

    @property
    def path_text(self) -> str:
        """The caller's way through the menu, e.g. "language:1>main:2", for the agent's screen."""
        return ">".join(self.path)


@dataclass(frozen=True)
class Step:
    """What the driver must do now, and the state to pass back with the next input."""

    actions: tuple[Action, ...]
    state: CallState


class Engine:
    """Runs calls through one menu."""

    def __init__(self, menu: Menu):
        self.menu = menu

    def start(self) -> Step:
        """The first step of a new call: set the menu's default language and enter its start node."""
        state = CallState(node=self.menu.start, language=self.menu.default_language)
        return self._enter(state, Transition(self.menu.start), [SetLanguage(self.menu.default_language)])

    def advance(self, state: CallState, input) -> Step:  # noqa: A002 - the hotline's word
        """Take the caller's (or the driver's) answer to the last waiting action; return the next step."""
        if not isinstance(input, (Digits, TicketStatus, CallerHungUp, PromptUnavailable)):
            raise InputError(
                f"{type(input).__name__} is not an IVR input; "
                "expected Digits, TicketStatus, CallerHungUp or PromptUnavailable"
            )
        routed = state.route is not None and not state.abandoned
        if state.finished and not (routed and isinstance(input, CallerHungUp)):
            raise CallFinishedError(
                f"call already finished at node '{state.node}' (path {state.path_text or '-'}); "
                "start a new call instead"
            )
        state = replace(state, steps=state.steps + 1)
        if isinstance(input, CallerHungUp):
            # After a route, the route stays: it is what the caller chose before hanging up.
            return Step((CALLER_HANGUP,), self._finish(state, "hangup", route=state.route, hangup=CALLER_HANGUP,
                                                       abandoned=True))
        if isinstance(input, PromptUnavailable):
            return self._enter(self._note(state, "prompt-missing"), Transition(self.menu.fallback), [])

        # A state from another version of the menu (reloaded mid-call) may name a node that is gone.
        node = self.menu.nodes.get(state.node)
        if state.awaiting == AWAIT_CHOICE and isinstance(input, Digits) and isinstance(node, MenuNode):
            return self._on_choice(state, node, _keys(input.digits))
        if isinstance(node, TicketStatusNode):
            if state.awaiting == AWAIT_TICKET_NUMBER and isinstance(input, Digits):
                return self._on_ticket_number(state, node, _keys(input.digits))
            if (
                state.awaiting == AWAIT_TICKET_STATUS
                and isinstance(input, TicketStatus)
                and input.number == state.ticket_number
            ):
                return self._on_ticket_status(state, node, input.status)
        return self._enter(self._note(state, "unexpected"), Transition(self.menu.fallback), [])

    # --- inputs ---

    def _on_choice(self, state: CallState, node: MenuNode, keys: str) -> Step:
        if not keys:
            return self._failed(state, node, "timeout")
        choice = node.choices.get(keys)
        if choice is None:
            return self._failed(state, node, "invalid")
        return self._enter(self._note(state, keys), choice, [])

    def _on_ticket_number(self, state: CallState, node: TicketStatusNode, keys: str) -> Step:
        if not keys:
            return self._failed(state, node, "timeout")
        if not (keys.isascii() and keys.isdigit() and node.min_digits <= len(keys) <= node.max_digits):
            return self._failed(state, node, "invalid")
        state = replace(self._note(state, "number"), ticket_number=keys, failures=0, awaiting=AWAIT_TICKET_STATUS)
        return self._wait(state, [], LookupTicket(keys))

    def _on_ticket_status(self, state: CallState, node: TicketStatusNode, status: str | None) -> Step:
        prompt = node.statuses.get(status) if status is not None else None
        if prompt is None:
            state, prompt = self._note(state, "not-found"), node.not_found
        else:
            state = self._note(state, status)
        return self._enter(state, node.next, [Play(prompt)])

    def _failed(self, state: CallState, node: MenuNode | TicketStatusNode, token: str) -> Step:
        """A missing ("timeout") or wrong ("invalid") input on a node that waits for keys."""
        state = self._note(state, token)
        explicit = node.on_no_input if token == "timeout" else node.on_invalid
        if explicit is not None:
            return self._enter(state, explicit, [])
        failures = state.failures + 1
        if failures >= node.max_failures:
            return self._enter(state, node.on_failure, [])
        prompt = node.no_input_prompt if token == "timeout" else node.invalid_prompt
        actions: list[Action] = [Play(prompt)] if prompt else []
        return self._wait(replace(state, failures=failures), actions, _collect(node))

    # --- moving between nodes ---

    def _enter(self, state: CallState, transition: Transition, actions: list[Action]) -> Step:
        """Follow a transition through announcements until a node waits for input or ends the call."""
        if transition.language and transition.language != state.language:
            actions.append(SetLanguage(transition.language))
            state = replace(state, language=transition.language)
        node_id = transition.next
        # A menu passed the load checks, so announcements cannot loop; the bound is a second guard.
        for _ in range(len(self.menu.nodes) + 1):
            node = self.menu.node(node_id)
            state = replace(state, node=node_id, failures=0)
            if isinstance(node, AnnouncementNode):
                actions.append(Play(node.prompt))
                if node.next.language and node.next.language != state.language:
                    actions.append(SetLanguage(node.next.language))
                    state = replace(state, language=node.next.language)
                node_id = node.next.next
                continue
            if isinstance(node, (RouteNode, HangupNode)):
                if node.prompt:
                    actions.append(Play(node.prompt))
                if isinstance(node, RouteNode):
                    route = Route(category=node.category, urgency=node.urgency)
                    return Step((*actions, route), self._finish(state, None, route=route))
                hangup = Hangup(reason=node.reason)
                return Step((*actions, hangup), self._finish(state, None, hangup=hangup))
            if isinstance(node, MenuNode):
                state = replace(state, awaiting=AWAIT_CHOICE)
            else:
                # The last number asked about stays until a new one is asked: the agent may need it.
                state = replace(state, awaiting=AWAIT_TICKET_NUMBER, ticket_number=None)
            return self._wait(state, actions, _collect(node))
        raise MenuError(f"{self.menu.source}: announcements loop at node '{node_id}'")  # pragma: no cover

    def _wait(self, state: CallState, actions: list[Action], waiting: Collect | LookupTicket) -> Step:
        """End a step on a waiting action, unless the call has used up its inputs."""
        if state.steps >= self.menu.max_inputs:
            return self._enter(self._note(state, "limit"), Transition(self.menu.fallback), actions)
        return Step((*actions, waiting), state)

    def _note(self, state: CallState, token: str) -> CallState:
        return replace(state, path=(*state.path, f"{state.node}:{token}"))

    def _finish(self, state: CallState, token: str | None, *, route: Route | None = None,
                hangup: Hangup | None = None, abandoned: bool = False) -> CallState:
        if token:
            state = self._note(state, token)
        return replace(state, finished=True, awaiting="", route=route, hangup=hangup, abandoned=abandoned)


def _keys(digits: str) -> str:
    # GET DATA strips the ending '#', a Twilio Gather too; a driver that passes it through is forgiven.
    return digits.rstrip("#")


def _collect(node: MenuNode | TicketStatusNode) -> Collect:
    max_digits = 1 if isinstance(node, MenuNode) else node.max_digits
    return Collect(prompt=node.prompt, max_digits=max_digits, timeout_ms=node.timeout_ms)
