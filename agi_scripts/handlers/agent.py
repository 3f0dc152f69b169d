"""``agi://host:4573/agent?action=login|logout|pause|unpause``: the agents' feature codes (*71 log in, *72 log
out, *73X pause with reason X, *74 unpause; asterisk/extensions.conf, [hotline-agents]).

The agent is the one whose softphone placed the call: agi_channel ``PJSIP/agent1001-0000000a`` is the
interface ``PJSIP/agent1001``. Never the caller ID, which a phone sets as it likes. The handler asks the desk
(which asks Asterisk over AMI), sets ``HOTLINE_AGENT_RESULT`` (ok, unknown-agent, unavailable, refused,
bad-reason), then plays a short prompt in the agent's own language. The agent's state changes when
Asterisk's events confirm it. Whatever fails, the channel goes back to the dialplan, never hung up.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from agi_scripts import variables
from agi_scripts.channel import HotlineAGI
from base import metrics
from ivr.prompts import asterisk_language, sound_name
from queues.agents import (
    AgentError,
    AgentNotFound,
    AgentStore,
    AgentStoreUnavailable,
    InvalidPauseReason,
    pause_reason_by_digit,
)
from queues.control import QueueControlError, QueueControlUnavailable
from queues.desk import LOGIN, LOGOUT, PAUSE, UNPAUSE, AgentDesk

log = logging.getLogger("hotline.agi.agent")

OK, UNKNOWN_AGENT, UNAVAILABLE, REFUSED, BAD_REASON = "ok", "unknown-agent", "unavailable", "refused", "bad-reason"

#: The prompt played for each outcome (ivr/menus/*.yaml, dialplan_prompts).
PROMPTS = {
    (LOGIN, OK): "agent-logged-in",
    (LOGOUT, OK): "agent-logged-out",
    (PAUSE, OK): "agent-paused",
    (UNPAUSE, OK): "agent-unpaused",
    UNKNOWN_AGENT: "agent-unknown",
    UNAVAILABLE: "agent-unavailable",
    REFUSED: "agent-refused",
    BAD_REASON: "agent-bad-reason",
}
LOGGED_IN_PAUSED = "agent-logged-in-paused"  # a re-login that keeps the pause says so
DEFAULT_PAUSE_DIGIT = "1"  # *73 alone

# A channel is its device, "-" and an 8-digit hex counter (Local channels add ";1" / ";2").
_CHANNEL = re.compile(r"(?P<interface>[A-Za-z][A-Za-z0-9]*/.+)-[0-9a-f]{8}(?:;[12])?")
_FEATURES = metrics.counter("hotline_agent_feature_codes_total", "Agents' feature codes by action and result",
                            ["action", "result"])


def interface_of(channel: str) -> str | None:
    """The device a channel belongs to: ``PJSIP/agent1001-0000000a`` -> ``PJSIP/agent1001``."""
    match = _CHANNEL.fullmatch(channel or "")
    return match.group("interface") if match else None


@dataclass
class AgentPhone:
    """The ``agent`` handler over a queues.desk.AgentDesk and the agents' store."""

    desk: AgentDesk
    agents: AgentStore

    def handle(self, agi: HotlineAGI) -> None:
        env = agi.environment
        action = (parse_qs(env.query).get("action") or [""])[0]
        result, prompt, language = self._run(env, action)
        _FEATURES.labels(action if action in (LOGIN, LOGOUT, PAUSE, UNPAUSE) else "other", result).inc()
        agi.set_variable(variables.HOTLINE_AGENT_RESULT, result)  # first: a hang-up during the prompt still leaves it
        wanted = asterisk_language(language) if language else None
        if wanted and wanted != env.get("agi_language"):
            agi.set_variable(variables.CHANNEL_LANGUAGE, wanted)
        agi.play(sound_name(prompt))

    def _run(self, env, action: str) -> tuple[str, str, str | None]:
        """(result, prompt, the agent's language or None) for one feature code."""
        interface = interface_of(env.get("agi_channel"))
        if action not in (LOGIN, LOGOUT, PAUSE, UNPAUSE):
            log.warning("agent feature code with an unknown action", extra={"event": "agent.bad_action",
                                                                            "action": action[:20]})
            return REFUSED, PROMPTS[REFUSED], None
        if interface is None:
            return UNKNOWN_AGENT, PROMPTS[UNKNOWN_AGENT], None
        language = None
        try:
            agent = self.agents.by_interface(interface)
            language = agent.language
            if action == LOGIN:
                request = self.desk.login(agent.code)
                return OK, LOGGED_IN_PAUSED if request.paused else PROMPTS[LOGIN, OK], language
            if action == LOGOUT:
                self.desk.logout(agent.code)
            elif action == PAUSE:
                self.desk.pause(agent.code, pause_reason_by_digit(_pause_digit(env)).key)
            else:
                self.desk.unpause(agent.code)
            return OK, PROMPTS[action, OK], language
        except AgentNotFound:
            log.info("feature code from a phone of no agent", extra={"event": "agent.unknown_phone",
                                                                      "interface": interface[:80]})
            return UNKNOWN_AGENT, PROMPTS[UNKNOWN_AGENT], language
        except InvalidPauseReason:
            return BAD_REASON, PROMPTS[BAD_REASON], language
        except (QueueControlUnavailable, AgentStoreUnavailable) as exc:
            log.warning("agent %s not done: %s", action, exc, extra={"event": "agent.unavailable"})
            return UNAVAILABLE, PROMPTS[UNAVAILABLE], language
        except (QueueControlError, AgentError) as exc:  # Asterisk said no; a deactivated or queueless agent
            log.warning("agent %s refused: %s", action, exc, extra={"event": "agent.refused"})
            return REFUSED, PROMPTS[REFUSED], language
        except Exception:  # a bug or an outage not foreseen: the agent hears it, the channel stays up
            log.exception("agent feature code failed", extra={"event": "agent.error", "action": action})
            return UNAVAILABLE, PROMPTS[UNAVAILABLE], language


def _pause_digit(env) -> str:
    """The reason code: the AGI argument, else what followed *73 in the dialled number, else 1."""
    args = [a.strip() for a in env.args]
    if args and args[0]:
        return args[0]
    extension = env.get("agi_extension")
    return extension[3:] if extension.startswith("*73") and len(extension) > 3 else DEFAULT_PAUSE_DIGIT
