"""agi://host/agent over real sockets: the agents' feature codes (*71 log in, *72 log out, *73X pause,
*74 unpause) as the dialplan ([hotline-agents]) and the agent hear them; and that dialplan, walked."""

from __future__ import annotations

import logging

import pytest

from agi_scripts.handlers.agent import LOGGED_IN_PAUSED, PROMPTS, AgentPhone, interface_of
from agi_scripts.simulator import Caller, SimulatedChannel, place_call
from base.db import make_engine, make_session_factory
from ivr.menu import load_menu
from queues import events as ev
from queues.agents import AgentStore
from queues.control import NoQueueControl, QueueControlError, QueueControlUnavailable
from queues.desk import AgentDesk
from queues.presence import AgentPresence
from tests.orders_fixtures import unreachable_database_url
from tests.test_agents import RecordingControl
from tests.test_asterisk_config import Backend, Call, Dialplan, load

PHONE = "PJSIP/agent1001"
FEATURES = {"*71": "agent?action=login", "*72": "agent?action=logout", "*74": "agent?action=unpause"}


@pytest.fixture
def agents(session_factory):
    store = AgentStore(session_factory)
    store.add("1001", "Wang", PHONE, languages=["zh-CN"], queues={"hotline-zh": 0, "urgent-zh": 1})
    store.add("2001", "Mary", "PJSIP/agent2001", languages=["en", "zh-CN"], queues={"hotline-en": 0})
    return store


@pytest.fixture
def presence(redis_conn, redis_prefix):
    return AgentPresence(redis_conn, prefix=redis_prefix, wrap_up_seconds=20)


@pytest.fixture
def serve(agi_handler_server):
    return lambda agents_, presence_, control: agi_handler_server(
        "agent", AgentPhone(desk=AgentDesk(agents_, presence_, control), agents=agents_))


def dial(address, dialled: str, channel: str = f"{PHONE}-0000000a", arg: str | None = None,
         caller_id: str = "1001", **kw):
    script = FEATURES.get(dialled, "agent?action=pause")
    env = {"agi_context": "hotline-agents"}
    if arg is not None:
        env["agi_arg_1"] = arg
    caller = Caller(number=caller_id, dialled=dialled, script=script, channel=channel, env=env, **kw)
    return place_call(caller, *address, timeout=20, channel=SimulatedChannel(caller, *address))


def sent(result) -> list[str]:
    return [line[4:] for line in result.transcript if line.startswith(">>> ")]


def test_the_phone_is_found_by_its_channel():
    assert interface_of("PJSIP/agent1001-0000000a") == PHONE
    assert interface_of("PJSIP/agent-1001-0000001f") == "PJSIP/agent-1001"
    assert interface_of("SIP/agent1001-00000003") == "SIP/agent1001"
    assert interface_of("Local/1001@hotline-agents-00000002;1") == "Local/1001@hotline-agents"
    for bad in ("", "PJSIP/agent1001", "PJSIP/agent-1001", "garbage", "-0000000a"):
        assert interface_of(bad) is None


def test_star_71_logs_the_agent_in_to_its_queues(agents, presence, serve):
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), "*71")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert control.calls == [("add", "hotline-zh", PHONE, "1001", 0, False, "", PHONE),
                             ("add", "urgent-zh", PHONE, "1001", 1, False, "", PHONE)]
    assert sent(leg) == ['SET VARIABLE HOTLINE_AGENT_RESULT "ok"', "STREAM FILE hotline/agent-logged-in \"\" 0"]
    assert "HANGUP" not in sent(leg)


def test_star_71_after_a_paused_logout_logs_in_paused_and_says_so(agents, presence, serve):
    presence.apply(ev.MemberAdded(1.0, "hotline-zh", PHONE, "1001"))
    presence.apply(ev.MemberPaused(2.0, "hotline-zh", "1001", True, "lunch"))
    presence.apply(ev.MemberRemoved(3.0, "hotline-zh", PHONE))
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), "*71")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert {(c[5], c[6]) for c in control.calls} == {(True, "lunch")}
    assert f"STREAM FILE hotline/{LOGGED_IN_PAUSED} \"\" 0" in sent(leg)


def test_an_english_agent_hears_english(agents, presence, serve):
    leg = dial(serve(agents, presence, RecordingControl()), "*72", channel="PJSIP/agent2001-00000011")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert leg.variables["CHANNEL(language)"] == "en"
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-logged-out "" 0'


def test_star_72_logs_out_of_every_queue(agents, presence, serve):
    presence.apply(ev.MemberAdded(1.0, "traffic-zh", PHONE, "1001"))
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), "*72")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert sorted(c[1] for c in control.calls) == ["hotline-zh", "traffic-zh", "urgent-zh"]


@pytest.mark.parametrize("dialled, arg, reason", [
    ("*731", "1", "break"),
    ("*732", "2", "lunch"),
    ("*735", "5", "after-call-work"),
    ("*733", None, "training"),  # no argument: the dialled digits say it
    ("*73", "", "break"),  # *73 alone
])
def test_star_73_pauses_in_all_queues_with_the_reason(agents, presence, serve, dialled, arg, reason):
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), dialled, arg=arg)
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert control.calls == [("pause", PHONE, True, reason, "")]
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-paused "" 0'


@pytest.mark.parametrize("dialled, arg", [("*739", "9"), ("*730", "0"), ("*73", "x")])
def test_an_unknown_reason_code_pauses_nothing(agents, presence, serve, dialled, arg):
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), dialled, arg=arg)
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "bad-reason"
    assert control.calls == []
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-bad-reason "" 0'


def test_star_74_unpauses(agents, presence, serve):
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), "*74")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "ok"
    assert control.calls == [("pause", PHONE, False, "", "")]
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-unpaused "" 0'


@pytest.mark.parametrize("channel", ["PJSIP/agent9999-00000001", "PJSIP/carrier-00000001", "odd"])
def test_a_phone_of_no_agent_is_told_so_whatever_caller_id_it_sends(agents, presence, serve, channel):
    control = RecordingControl()
    leg = dial(serve(agents, presence, control), "*71", channel=channel, caller_id="1001")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "unknown-agent"
    assert control.calls == []
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-unknown "" 0'


@pytest.mark.parametrize("dialled", ["*71", "*72", "*732", "*74"])
def test_ami_unavailable_is_said_and_the_channel_stays_up(agents, presence, serve, dialled):
    leg = dial(serve(agents, presence, NoQueueControl()), dialled)
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "unavailable"
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-unavailable "" 0'
    assert not any(line.startswith("HANGUP") for line in sent(leg)) and not leg.caller_hung_up


def test_asterisk_refusing_or_a_deactivated_agent_is_refused(agents, presence, serve):
    address = serve(agents, presence, RecordingControl({"": QueueControlError("Interface not found")}))
    assert dial(address, "*74").variables["HOTLINE_AGENT_RESULT"] == "refused"
    agents.update("1001", active=False)
    leg = dial(address, "*71")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "refused"
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-refused "" 0'


def test_a_slow_or_broken_link_and_a_bad_action(agents, presence, serve):
    address = serve(agents, presence, RecordingControl({"*": QueueControlUnavailable("no answer within 5 s")}))
    assert dial(address, "*732").variables["HOTLINE_AGENT_RESULT"] == "unavailable"
    caller = Caller(number="1001", dialled="*79", script="agent?action=dance", channel=f"{PHONE}-0000000b")
    leg = place_call(caller, *address, timeout=20)
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "refused"


def test_a_database_outage_is_unavailable(tmp_path, presence, serve, database_url, caplog):
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        caplog.set_level(logging.ERROR)
        leg = dial(serve(AgentStore(make_session_factory(engine)), presence, RecordingControl()), "*71")
    finally:
        engine.dispose()
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "unavailable"
    assert sent(leg)[-1] == 'STREAM FILE hotline/agent-unavailable "" 0'


def test_a_bug_in_the_backend_is_unavailable_not_a_dropped_channel(agents, serve):
    class Broken:
        def state(self, code, now=None):
            raise RuntimeError("boom")

    leg = dial(serve(agents, Broken(), RecordingControl()), "*71")
    assert leg.variables["HOTLINE_AGENT_RESULT"] == "unavailable"
    assert not any(line.startswith("HANGUP") for line in sent(leg))


def test_missing_sounds_or_a_hang_up_during_the_prompt_still_leave_the_result(agents, presence, serve):
    address = serve(agents, presence, RecordingControl())
    assert dial(address, "*74", missing_sounds=True).variables["HOTLINE_AGENT_RESULT"] == "ok"
    gone = dial(address, "*74", hangup_at=2)
    assert gone.variables["HOTLINE_AGENT_RESULT"] == "ok" and gone.caller_hung_up


def test_every_prompt_the_handler_plays_is_in_both_menus():
    prompts = set(PROMPTS.values()) | {LOGGED_IN_PAUSED}
    for menu in ("default", "no-menu"):
        assert prompts <= set(load_menu(menu).prompt_ids())


# -- the dialplan ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dialplan():
    return Dialplan(load("extensions.conf"))


def walk(dialplan, dialled, backend):
    return Call(dialplan, set(), backend).run("hotline-agents", dialled)


@pytest.mark.parametrize("dialled, url, argument", [
    ("*71", "agent?action=login", None),
    ("*72", "agent?action=logout", None),
    ("*731", "agent?action=pause", "1"),
    ("*734", "agent?action=pause", "4"),
    ("*73", "agent?action=pause", "1"),
    ("*74", "agent?action=unpause", None),
])
def test_each_feature_code_runs_the_agent_handler(dialplan, dialled, url, argument):
    call = walk(dialplan, dialled, Backend("ok", {"HOTLINE_AGENT_RESULT": "ok"}))
    assert call.agi_urls == [f"agi://127.0.0.1:4573/{url}"]
    agi_args = next(args for _, app, args in call.trace if app == "AGI").split(",")
    assert agi_args[1:] == ([argument] if argument else [])
    assert call.answered and call.sounds == [] and call.ended_by == "Hangup()"
    assert call.absolute_timeout == 0


@pytest.mark.parametrize("backend", [Backend("refused"), Backend("closed"), Backend("failure"), Backend("silent")],
                         ids=["refused", "closed", "failure", "silent"])
def test_an_unreachable_backend_is_announced(dialplan, backend):
    call = walk(dialplan, "*71", backend)
    assert call.sounds == ["en/hotline/agent-unavailable"]
    assert call.ended_by == "Hangup()"
    assert call.guard_fired == (backend.mode == "silent")


def test_agents_still_call_each_other(dialplan):
    steps = dialplan.find("hotline-agents", "1002")
    assert [s.args for s in steps.values() if s.app == "Dial"] == ["PJSIP/agent${EXTEN},30"]
