"""The port through which the domain asks Asterisk to change its queues or place a call.

The domain says what it wants (add this agent's phone to that queue, pause it with a reason, ring this
phone and then that number); a driver (the AMI link, ``ami/``) carries it out. Whether it happened is
learned from Asterisk's events (``queues.events``), never assumed when the request is sent.
"""

from __future__ import annotations

from typing import Mapping, Protocol


class QueueControlError(Exception):
    """Asterisk refused a request (the message says why, in Asterisk's words)."""


class QueueControlUnavailable(QueueControlError):
    """Asterisk could not be asked: no AMI link, the link is down, or the answer did not come in time."""


class QueueControl(Protocol):
    """What the hotline asks of Asterisk's queues (app_queue) and dialler (Originate)."""

    def add_member(self, queue: str, interface: str, member_name: str, *, penalty: int = 0,
                   paused: bool = False, reason: str = "", state_interface: str = "") -> None:
        """Put a device into a queue (QueueAdd). Already being there is not an error."""

    def remove_member(self, queue: str, interface: str) -> None:
        """Take a device out of a queue (QueueRemove). Not being there is not an error."""

    def pause_member(self, interface: str, paused: bool, *, reason: str = "", queue: str = "") -> None:
        """Pause or unpause a device (QueuePause) in one queue, or in all its queues when ``queue`` is ""."""

    def set_penalty(self, interface: str, penalty: int, *, queue: str = "") -> None:
        """Change a device's penalty (QueuePenalty) in one queue or all."""

    def originate(self, originate_id: str, channel: str, *, context: str, exten: str, caller_id: str,
                  variables: Mapping[str, str] | None = None, timeout_seconds: int = 30) -> None:
        """Ring ``channel`` and, once it answers, send it to ``exten`` in ``context`` (Originate, Async).
        Returns once Asterisk queued the call; its outcome arrives later as ``events.OriginateResult``
        carrying the same ``originate_id``."""


class NoQueueControl:
    """The stand-in when no AMI link is configured (``ami_secret`` empty): every request says so."""

    def _refuse(self, *args, **kwargs):
        raise QueueControlUnavailable("no AMI link is configured (set ami_secret)")

    add_member = remove_member = pause_member = set_penalty = originate = _refuse
