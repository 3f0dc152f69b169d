"""``queues.control.QueueControl`` over the AMI link: app_queue's actions and Originate.

Asterisk's refusals come back as ``QueueControlError`` in Asterisk's words, except the two that only say
the wish is already true ("Already there" on QueueAdd, "Not there" on QueueRemove), so logging an agent
in or out twice is harmless. A link that is down or slow is ``QueueControlUnavailable``.
"""

from __future__ import annotations

import logging
from typing import Mapping

from ami.link import AmiActionFailed, AmiError, AmiLink
from queues.control import QueueControlError, QueueControlUnavailable

__all__ = ["AmiQueueControl"]

log = logging.getLogger("hotline.ami.control")


class AmiQueueControl:
    """What the hotline asks of Asterisk's queues and dialler, sent as AMI actions on ``link``."""

    def __init__(self, link: AmiLink):
        self._link = link

    def add_member(self, queue: str, interface: str, member_name: str, *, penalty: int = 0,
                   paused: bool = False, reason: str = "", state_interface: str = "") -> None:
        self._ask("QueueAdd", "Already there", Queue=queue, Interface=interface, MemberName=member_name,
                  StateInterface=state_interface or None, Penalty=penalty, Paused=paused, Reason=reason or None)

    def remove_member(self, queue: str, interface: str) -> None:
        self._ask("QueueRemove", "Not there", Queue=queue, Interface=interface)

    def pause_member(self, interface: str, paused: bool, *, reason: str = "", queue: str = "") -> None:
        self._ask("QueuePause", None, Interface=interface, Paused=paused, Reason=reason or None, Queue=queue or None)

    def set_penalty(self, interface: str, penalty: int, *, queue: str = "") -> None:
        self._ask("QueuePenalty", None, Interface=interface, Penalty=penalty, Queue=queue or None)

    def originate(self, originate_id: str, channel: str, *, context: str, exten: str, caller_id: str,
                  variables: Mapping[str, str] | None = None, timeout_seconds: int = 30) -> None:
        pairs = []
        for name, value in (variables or {}).items():
            if not name or "=" in name:
                raise QueueControlError(f"not a channel variable name: {name!r}")
            pairs.append(f"{name}={value}")
        self._ask("Originate", None, Channel=channel, Context=context, Exten=exten, Priority=1, CallerID=caller_id,
                  Timeout=int(timeout_seconds * 1000), Async=True, ActionID=originate_id, Variable=pairs or None)

    def _ask(self, action: str, already_true: str | None, **headers: object) -> None:
        try:
            self._link.action(action, **headers)
        except AmiActionFailed as exc:
            if already_true and already_true.lower() in exc.message.lower():
                log.debug("%s: %s (nothing to do)", action, exc.message)
                return
            raise QueueControlError(exc.message) from None
        except AmiError as exc:
            raise QueueControlUnavailable(f"Asterisk could not be asked to {action}: {exc}") from None
        except ValueError as exc:
            raise QueueControlError(f"{action} cannot be sent: {exc}") from None
