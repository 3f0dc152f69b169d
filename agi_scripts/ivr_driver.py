"""Runs the IVR engine's actions over an AGI channel: prompts, key collection, language, ticket lookups."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from asterisk import agi as pyst

from agi_scripts import variables
from agi_scripts.channel import CommandFailed, HotlineAGI
from ivr.actions import (
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
from ivr.engine import CallState, Engine
from ivr.errors import IvrError
from ivr.prompts import asterisk_language, sound_name

log = logging.getLogger("hotline.agi.ivr")

#: Looks up a ticket's status by number; None when there is no such ticket (or it can't be read now).
StatusLookup = Callable[[str], "str | None"]
#: Called with each new state of the call, so a handler that fails midway still knows the caller's choices.
StateListener = Callable[[CallState], None]


class MissingSounds:
    """Sounds Asterisk could not play, each reported once per process and language (not once per call)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # "<asterisk language>/hotline/<prompt id>"
        self._lock = threading.Lock()

    def report(self, prompt: str, language: str) -> None:
        sound = f"{asterisk_language(language)}/{sound_name(prompt)}"
        with self._lock:
            if sound in self._seen:
                return
            self._seen.add(sound)
        log.error("prompt %s cannot be played: Asterisk has no sound %s (callers miss it; a menu they cannot "
                  "hear sends them straight to an agent). Render the prompts into Asterisk's sounds folder: "
                  "hotline prompts --sounds-dir <Asterisk's sounds folder>", prompt, sound,
                  extra={"event": "agi.prompt_missing", "prompt": prompt, "sound": sound})

    def clear(self) -> None:
        """Forget what was reported (tests)."""
        with self._lock:
            self._seen.clear()


MISSING_SOUNDS = MissingSounds()


def run_ivr(agi: HotlineAGI, engine: Engine, lookup_status: StatusLookup,
            on_state: StateListener | None = None) -> CallState:
    """Drive one caller through the menu; returns the finished state (routed, hung up or abandoned).

    A caller who hangs up after a route (during its prompt) comes back abandoned with the route kept.
    """
    step = engine.start()
    language = engine.menu.default_language  # the prompts' language at this point of the step
    while True:
        if on_state is not None:
            on_state(step.state)
        reply = None
        try:
            for action in step.actions:
                if isinstance(action, Play):
                    if not agi.play(sound_name(action.prompt)):
                        MISSING_SOUNDS.report(action.prompt, language)
                elif isinstance(action, SetLanguage):
                    agi.set_variable(variables.CHANNEL_LANGUAGE, asterisk_language(action.language))
                    agi.set_variable(variables.HOTLINE_LANG, action.language)
                    language = action.language
                elif isinstance(action, Collect):
                    try:
                        reply = Digits(agi.get_digits(sound_name(action.prompt), action.timeout_ms,
                                                      action.max_digits))
                    except CommandFailed:  # -1 with the channel still up: Asterisk lacks the sound
                        MISSING_SOUNDS.report(action.prompt, language)
                        reply = PromptUnavailable(action.prompt)
                elif isinstance(action, LookupTicket):
                    reply = TicketStatus(action.number, lookup_status(action.number))
                elif isinstance(action, (Route, Hangup)):
                    return step.state
        except pyst.AGIHangup:  # ChannelHungUp, ConnectionClosed: the caller is gone
            if step.state.finished and step.state.route is None:
                return step.state  # gone during the goodbye of a finished call: nothing more to note
            state = engine.advance(step.state, CallerHungUp()).state
            if on_state is not None:
                on_state(state)
            return state
        if reply is None:
            raise IvrError("an IVR step ended without waiting for input or leaving the menu")
        step = engine.advance(step.state, reply)
