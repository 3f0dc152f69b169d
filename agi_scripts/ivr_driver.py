"""Runs the IVR engine's actions over an AGI channel: prompts, key collection, language, ticket lookups."""

from __future__ import annotations

from typing import Callable

from agi_scripts import variables
from agi_scripts.channel import ChannelHungUp, HotlineAGI
from ivr.actions import (
    CallerHungUp,
    Collect,
    Digits,
    Hangup,
    LookupTicket,
    Play,
    Route,
    SetLanguage,
    TicketStatus,
)
from ivr.engine import CallState, Engine
from ivr.errors import IvrError
from ivr.prompts import asterisk_language, sound_name

#: Looks up a ticket's status by number; None when there is no such ticket (or it can't be read now).
StatusLookup = Callable[[str], "str | None"]


def run_ivr(agi: HotlineAGI, engine: Engine, lookup_status: StatusLookup) -> CallState:
    """Drive one caller through the menu; returns the finished state (routed, hung up or abandoned)."""
    step = engine.start()
    while True:
        reply = None
        try:
            for action in step.actions:
                if isinstance(action, Play):
                    agi.play(sound_name(action.prompt))
                elif isinstance(action, SetLanguage):
                    agi.set_variable(variables.CHANNEL_LANGUAGE, asterisk_language(action.language))
                    agi.set_variable(variables.HOTLINE_LANG, action.language)
                elif isinstance(action, Collect):
                    reply = Digits(agi.get_digits(sound_name(action.prompt), action.timeout_ms, action.max_digits))
                elif isinstance(action, LookupTicket):
                    reply = TicketStatus(action.number, lookup_status(action.number))
                elif isinstance(action, (Route, Hangup)):
                    return step.state
        except ChannelHungUp:
            return engine.advance(step.state, CallerHungUp()).state
        if reply is None:
            raise IvrError("an IVR step ended without waiting for input or leaving the menu")
        step = engine.advance(step.state, reply)
