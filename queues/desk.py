"""What an agent asks for (log in, log out, pause, unpause), from the web, the API or the phone, turned
into requests to Asterisk's queues.

Logging in is one QueueAdd per queue the agent serves, with its phone as interface and state interface,
its code as MemberName and its penalty; an agent that was paused when it logged out logs in paused with
the same reason. A pause without a queue pauses the agent in all its queues. Each method returns what was
asked: the agent's state itself changes when Asterisk's events arrive (``queues.presence``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

import redis

from queues.agents import AgentInactive, AgentStore, AgentView, InvalidAgent, pause_reason_text
from queues.control import QueueControl, QueueControlError, QueueControlUnavailable
from queues.presence import AgentPresence, AgentState, AgentStatus

log = logging.getLogger(__name__)

LOGIN, LOGOUT, PAUSE, UNPAUSE = "login", "logout", "pause", "unpause"


@dataclass(frozen=True)
class DeskRequest:
    """What was asked of Asterisk; ``queues`` () for a pause or unpause: all the agent's queues."""

    action: str
    code: str
    interface: str
    queues: tuple[str, ...] = ()
    paused: bool = False
    reason: str = ""


class AgentDesk:
    def __init__(self, store: AgentStore, presence: AgentPresence, control: QueueControl) -> None:
        self.store = store
        self.presence = presence
        self.control = control

    def login(self, code: str) -> DeskRequest:
        agent = self._active(code)
        if not agent.queues:
            raise InvalidAgent(f"agent {code} serves no queue yet: give it its queues first")
        paused, reason = self._kept_pause(code)
        refused = []
        for served in agent.queues:
            try:
                with _asking(f"agent {code} cannot be logged in to {served.queue}"):
                    self.control.add_member(served.queue, agent.interface, agent.code, penalty=served.penalty,
                                            paused=paused, reason=reason, state_interface=agent.interface)
            except QueueControlUnavailable:
                raise
            except QueueControlError as exc:  # one queue refused (e.g. missing in queues.conf): try the others
                refused.append(str(exc))
        if refused:
            raise QueueControlError("; ".join(refused))
        return DeskRequest(LOGIN, code, agent.interface, tuple(q.queue for q in agent.queues), paused, reason)

    def logout(self, code: str) -> DeskRequest:
        """Out of every queue Asterisk has the agent in, and of those it serves; also for an inactive agent."""
        agent = self.store.get(code)
        now = self._presence_state(code)
        members = {(queue, now.interface or agent.interface) for queue in now.queues}
        members |= {(served.queue, agent.interface) for served in agent.queues}
        refused = []
        for queue, interface in sorted(members):
            try:
                with _asking(f"agent {code} cannot be logged out of {queue}"):
                    self.control.remove_member(queue, interface)
            except QueueControlUnavailable:
                raise
            except QueueControlError as exc:
                refused.append(str(exc))
        if refused:
            raise QueueControlError("; ".join(refused))
        return DeskRequest(LOGOUT, code, agent.interface, tuple(sorted({queue for queue, _ in members})))

    def pause(self, code: str, reason: str) -> DeskRequest:
        """Pause in all the agent's queues; ``reason`` is a listed key (queues.agents.PAUSE_REASONS) or text."""
        text = pause_reason_text(reason)
        agent = self._active(code)
        with _asking(f"agent {code} cannot be paused"):
            self.control.pause_member(agent.interface, True, reason=text)
        return DeskRequest(PAUSE, code, agent.interface, paused=True, reason=text)

    def unpause(self, code: str) -> DeskRequest:
        agent = self._active(code)
        with _asking(f"agent {code} cannot be unpaused"):
            self.control.pause_member(agent.interface, False)
        return DeskRequest(UNPAUSE, code, agent.interface)

    def _active(self, code: str) -> AgentView:
        agent = self.store.get(code)
        if not agent.active:
            raise AgentInactive(f"agent {code} is deactivated; an administrator can activate it again")
        return agent

    def _presence_state(self, code: str) -> AgentState:
        """The agent's presence, or "logged out, not paused" when Redis cannot say: the request still goes."""
        try:
            return self.presence.state(code)
        except redis.RedisError:
            log.warning("agent presence unreadable; going by the agent's configured queues",
                        extra={"event": "desk.presence_unavailable", "agent": code})
            return AgentState(code, AgentStatus.logged_out)

    def _kept_pause(self, code: str) -> tuple[bool, str]:
        now = self._presence_state(code)
        return now.paused, now.reason


@contextlib.contextmanager
def _asking(what: str) -> Iterator[None]:
    """Asterisk's refusals and silences pass up as their own types, saying which agent and why."""
    try:
        yield
    except QueueControlUnavailable as exc:
        raise QueueControlUnavailable(f"{what}: Asterisk cannot be asked ({exc})") from exc
    except QueueControlError as exc:
        raise QueueControlError(f"{what}: Asterisk refused ({exc})") from exc
