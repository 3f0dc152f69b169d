"""Errors of the IVR package: each names what went wrong for the person who reads it."""

from __future__ import annotations


class IvrError(Exception):
    """Base class of every error raised by the ivr package."""


class MenuError(IvrError, ValueError):
    """A menu file is missing, unreadable or invalid; the message names the file and the node."""


class MenuWarning(UserWarning):
    """A menu loads but holds something an operator probably did not mean (an unreachable node)."""


class CallFinishedError(IvrError, RuntimeError):
    """``Engine.advance`` was called on a call that already left the IVR."""


class InputError(IvrError, TypeError):
    """A driver passed something that is not an IVR input (``Digits``, ``TicketStatus``, ``CallerHungUp``)."""


class PromptError(IvrError):
    """Base class of the prompt sound-file errors."""


class PromptNameError(PromptError, ValueError):
    """A prompt id or language that no sound file can be named after."""


class PromptRenderError(PromptError, RuntimeError):
    """Prompt sound files could not be rendered."""


class ToolMissingError(PromptRenderError):
    """espeak-ng or sox is not installed."""
