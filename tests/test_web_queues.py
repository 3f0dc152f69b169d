"""The queues API, the live streams, the wallboard page and the agent's panel, on the real Redis: real queue
events go into QueueStatistics and AgentPresence as the queue watch applies them, and Asterisk is a recording
stand-in (the AMI one is tested in tests/test_ami_*.py). Streams are read over a real socket from waitress,
every read bounded."""

from __future__ import annotations

import http.client
import json
import re
import time
from urllib.parse import urlsplit

import pytest

from config import load_settings
from hotline.services import Services
from queues import erlang
from queues import events as ev
from queues.control import QueueControlError, QueueControlUnavailable
from queues.presence import AgentPresence
from queues.statistics import QueueStatistics
from web import live
from web.app import shutdown
from web.auth import create_token
from web.queues import live_hub
from tests.browser import live_app  # noqa: F401 (fixture)
from tests.servers import throwaway_redis
from tests.test_web_pages import login, session_csrf
from tests.test_web_support import app, assert_matches_spec, bearer, client, tokens  # noqa: F401 (fixtures)

WAIT = 20.0  # seconds any wait for a condition may take before the test fails
TICKETS = {"c1": "2026030200001", "c2": "2026030200002", "c4": "2026030200004"}
#: Callers in the forms Asterisk gives them, and every form of each that must never be shown in full.
CALLERS = {"c1": "13912345678", "c2": "+8613800138000", "c3": "089866668888", "c4": "13700137000"}
FULL_FORMS = {"c1": ("8613912345678", "13912345678", "12345678"), "c2": ("8613800138000", "13800138000", "00138000"),
              "c3": ("8689866668888", "089866668888", "89866668888", "66668888"),
              "c4": ("8613700137000", "13700137000", "00137000")}


class RecordingControl:
    """Asterisk's queues for the tests: every request is recorded; set ``refuse`` to an error to raise it."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self.refuse: Exception | None = None

    def _ask(self, *request) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.asked.append(request)

    def add_member(self, queue, interface, member_name, *, penalty=0, paused=False, reason="", state_interface=""):
        self._ask("add", queue, interface, member_name, penalty, paused, reason)

    def remove_member(self, queue, interface):
        self._ask("remove", queue, interface)

    def pause_member(self, interface, paused, *, reason="", queue=""):
        self._ask("pause", interface, paused, reason, queue)

    def set_penalty(self, interface, penalty, *, queue=""):
        self._ask("penalty", interface, penalty, queue)

    def originate(self, originate_id, channel, **kwargs):
        self._ask("originate", originate_id, channel)


@pytest.fixture
def services(tmp_path, database_url, engine, session_factory, redis_conn, redis_prefix):
    """The app's services with the queue figures and the agents' states under this test's own Redis prefix,
    two live streams at most, and Asterisk recorded."""
    settings = load_settings(environ={}, data_dir=tmp_path, database_url=database_url, web_live_streams=2)
    made = Services(settings=settings, engine=engine, session_factory=session_factory, _redis=redis_conn)
    made.queue_statistics = QueueStatistics.from_settings(redis_conn, settings, prefix=redis_prefix)
    made.presence = AgentPresence(redis_conn, prefix=redis_prefix)
    made.queue_control = RecordingControl()
    return made


@pytest.fixture
def agents(services):
    services.agents.add("1001", "王芳", "PJSIP/agent1001", queues={"water": 0, "general": 1})
    services.agents.add("1002", "Li Lei", "PJSIP/agent1002", queues={"water": 0})
    services.agents.add("1003", "New Hire", "PJSIP/agent1003")  # serves no queue yet
    return services.agents


@pytest.fixture
def agent_tokens(session_factory):
    """An agent token for each of agents 1001 and 1002, one naming no agent, one naming an unknown agent."""
    made = {code: create_token(session_factory, f"agent-{code}", "agent", agent=code)
            for code in ("1001", "1002", "9999")}
    made["none"] = create_token(session_factory, "agent-without-code", "agent")
    return made


@pytest.fixture
def served(app, live_app):  # noqa: F811
    """The app on a real port, its streams heartbeating quickly; every stream ended before the server stops."""
    base = live_app(app, threads=8)
    live_hub(app).heartbeat_seconds = 0.2
    yield base
    shutdown(app)


def happen(services, *events) -> None:
    """Apply events as the queue watch does: the figures, the agents' states, the call-back list."""
    services.queue_statistics.apply_many(events)
    for event in events:
        services.presence.apply(event)
        if isinstance(event, (ev.CallerAbandoned, ev.CallerGaveUp)):
            services.call_backs.record_missed(event)


def busy_minute(services, t: float | None = None) -> float:
    """Two agents (1002 paused for lunch); in water c1 answered in 10 s and done, c2 abandoned after 30 s,
    c4 still waiting; in general c3 abandoned after 2 s (a short abandon)."""
    t = time.time() - 60 if t is None else t
    happen(services,
           ev.MemberAdded(t, "water", "PJSIP/agent1001", "1001"),
           ev.MemberAdded(t, "general", "PJSIP/agent1001", "1001"),
           ev.MemberAdded(t, "water", "PJSIP/agent1002", "1002"),
           ev.MemberPaused(t + 1, "water", "1002", True, "lunch", "PJSIP/agent1002"),
           ev.CallerJoined(t + 2, "water", "c1", caller=CALLERS["c1"], ticket=TICKETS["c1"]),
           ev.CallerJoined(t + 3, "water", "c2", caller=CALLERS["c2"], ticket=TICKETS["c2"]),
           ev.CallerJoined(t + 5, "general", "c3", caller=CALLERS["c3"]),
           ev.CallerAbandoned(t + 7, "general", "c3", wait_seconds=2, caller=CALLERS["c3"]),
           ev.CallAnswered(t + 12, "water", "c1", "1001", hold_seconds=10, ticket=TICKETS["c1"],
                           interface="PJSIP/agent1001"),
           ev.CallerJoined(t + 18, "water", "c4", caller=CALLERS["c4"], ticket=TICKETS["c4"]),
           ev.CallerAbandoned(t + 33, "water", "c2", wait_seconds=30, caller=CALLERS["c2"], ticket=TICKETS["c2"]),
           ev.CallCompleted(t + 40, "water", "c1", "1001", hold_seconds=10, talk_seconds=28,
                            interface="PJSIP/agent1001"))
    return t


def wait_for(condition, what: str):
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"still waiting for {what}")


class Events:
    """A server-sent-events answer read over a real socket; no read waits longer than WAIT."""

    def __init__(self, base: str, path: str, headers: dict | None = None) -> None:
        url = urlsplit(base)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=WAIT)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        self.comments, self.retry, self.text = 0, None, ""

    def next(self) -> tuple[str, dict | None]:
        """The next event, or ``(":", None)`` for a heartbeat comment; the retry line is noted on the way."""
        name, data, end = None, [], time.monotonic() + WAIT
        while time.monotonic() < end:
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.decode("utf-8").rstrip("\n")
            self.text += line + "\n"
            if not line and (name or data):
                return name, json.loads("\n".join(data))
            if line.startswith(":"):
                self.comments += 1
                return ":", None
            if line.startswith("retry:"):
                self.retry = int(line[len("retry:"):])
            elif line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        raise AssertionError("no event came")

    def until(self, check) -> tuple[str, dict]:
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            name, data = self.next()
            if check(name, data):
                return name, data
        raise AssertionError("the awaited event never came")

    def close(self) -> None:
        self.response.close()  # the socket closes only when its file is closed too
        self.connection.close()


def session_cookie(client, token: str) -> dict[str, str]:  # noqa: F811
    """Log in through the desk's form; the header a browser would send with the desk session."""
    assert login(client, token).status_code == 302
    return {"Cookie": f"session={client.get_cookie('session').value}"}


def scope(document: dict, queue: str | None) -> dict:
    return document["hotline"] if queue is None else next(q for q in document["queues"] if q["queue"] == queue)


# --- GET /api/queues ------------------------------------------------------------------------------------

def test_the_figures_per_queue_and_for_the_hotline(client, services, agents, tokens):  # noqa: F811
    busy_minute(services)
    response = client.get("/api/queues", headers=bearer(tokens["supervisor"]))
    assert response.status_code == 200
    assert_matches_spec(response, "/api/queues")
    document = response.get_json()
    assert [q["queue"] for q in document["queues"]] == ["general", "water"]
    assert [document[k] for k in ("service_seconds", "short_abandon_seconds", "connection_target")] == [15, 5, 0.95]

    hotline = scope(document, None)["figures"]
    assert {k: hotline[k] for k in ("waiting", "offered", "answered", "abandoned", "short_abandoned", "completed")} == {
        "waiting": 1, "offered": 4, "answered": 1, "abandoned": 2, "short_abandoned": 1, "completed": 1}
    assert hotline["service_level"] == pytest.approx(1 / 3, abs=1e-4)  # 1 in 15 s of 4 offered less 1 short
    assert hotline["connection_rate_24h"] == pytest.approx(1 / 3, abs=1e-4)
    assert (hotline["average_speed_of_answer"], hotline["average_handle_time"]) == (10.0, 28.0)
    assert hotline["longest_wait_seconds"] >= 42  # c4 joined 42 s before now

    water, general = scope(document, "water")["figures"], scope(document, "general")["figures"]
    assert (water["offered"], water["answered"], water["abandoned"], water["waiting"]) == (3, 1, 1, 1)
    assert (general["offered"], general["abandoned"], general["short_abandoned"]) == (1, 1, 1)


def test_agents_by_state_with_pause_reasons_and_time_in_pause(client, services, agents, tokens):  # noqa: F811
    busy_minute(services)
    document = client.get("/api/queues", headers=bearer(tokens["admin"])).get_json()
    counts = scope(document, None)["agents"]
    assert {k: counts[k] for k in ("logged_in", "available", "ringing", "on_call", "wrap_up", "paused")} == {
        "logged_in": 2, "available": 1, "ringing": 0, "on_call": 0, "wrap_up": 0, "paused": 1}
    [paused] = counts["paused_agents"]
    assert (paused["code"], paused["reason"]) == ("1002", "lunch") and paused["seconds"] >= 59
    assert scope(document, "general")["agents"]["logged_in"] == 1
    assert scope(document, "water")["agents"]["paused"] == 1
    assert [(a["code"], a["name"], a["state"]) for a in document["agents"]] == [
        ("1001", "王芳", "available"), ("1002", "Li Lei", "paused")]


def test_abandoned_callers_newest_first_and_the_open_call_backs_masked(client, services, agents, tokens):  # noqa: F811
    busy_minute(services)
    document = client.get("/api/queues", headers=bearer(tokens["supervisor"])).get_json()
    assert [(a["queue"], a["ticket"], a["wait_seconds"], a["short"]) for a in document["abandoned"]] == [
        ("water", TICKETS["c2"], 30.0, False), ("general", None, 2.0, True)]
    assert [a["caller"] for a in document["abandoned"]] == ["+86138****8000", "089*****8888"]
    assert [(c["queue"], c["ticket"], c["state"]) for c in document["call_backs"]] == [
        ("general", None, "waiting"), ("water", TICKETS["c2"], "waiting")]
    assert all("****" in c["caller"] for c in document["call_backs"])


def test_a_queue_with_agents_but_no_call_yet_is_listed(client, services, agents, tokens):  # noqa: F811
    happen(services, ev.MemberAdded(time.time(), "tourists", "PJSIP/agent1001", "1001"))
    document = client.get("/api/queues", headers=bearer(tokens["supervisor"])).get_json()
    tourists = scope(document, "tourists")
    assert tourists["figures"]["offered"] == 0 and tourists["agents"]["available"] == 1


def test_staffing_says_what_erlang_c_needs_for_the_current_load(client, services, agents, tokens):  # noqa: F811
    statistics = services.queue_statistics
    busy_minute(services)
    document = client.get("/api/queues", headers=bearer(tokens["supervisor"])).get_json()
    for queue in (None, "water", "general"):
        staffing = scope(document, queue)["staffing"]
        calls, handle = statistics.recent_load(queue, seconds=1800)
        assert {k: staffing[k] for k in ("model", "interval_seconds", "calls", "target_seconds", "goal")} == {
            "model": "erlang_c", "interval_seconds": 1800, "calls": calls, "target_seconds": 15, "goal": 0.8}
        if handle is None:
            assert staffing["agents_needed"] is None
        else:
            assert staffing["agents_needed"] == erlang.agents_needed(calls, 1800, handle, 15, 0.8)
    assert scope(document, None)["staffing"]["agents_staffed"] == 1  # 2 logged in, 1 paused


@pytest.mark.parametrize("role,status", [("admin", 200), ("supervisor", 200), ("agent", 403), ("dept:water", 403)])
def test_only_supervisors_and_admins_read_the_queues(client, services, tokens, role, status):  # noqa: F811
    response = client.get("/api/queues", headers=bearer(tokens[role]))
    assert response.status_code == status
    assert_matches_spec(response, "/api/queues")


def test_the_queues_need_a_token_or_a_desk_session(client, services, tokens):  # noqa: F811
    response = client.get("/api/queues")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_matches_spec(response, "/api/queues")
    assert client.get("/api/queues", headers=bearer("hl_nonsense")).status_code == 401
    login(client, tokens["supervisor"])
    assert client.get("/api/queues").status_code == 200  # the wallboard's fallback polls with its session


def test_redis_down_is_a_503_saying_so(client, services, tokens, redis_down):  # noqa: F811
    services.queue_statistics = QueueStatistics(redis_down, prefix="down:")
    services.presence = AgentPresence(redis_down, prefix="down:")
    response = client.get("/api/queues", headers=bearer(tokens["supervisor"]))
    assert response.status_code == 503 and response.get_json()["error"] == "figures_unavailable"
    assert response.headers["Retry-After"]
    assert_matches_spec(response, "/api/queues")


# --- agents: states and desk actions ----------------------------------------------------------------------

def test_supervisors_see_every_agent_and_an_agent_only_itself(client, services, agents, tokens,  # noqa: F811
                                                               agent_tokens):
    busy_minute(services)
    response = client.get("/api/agents", headers=bearer(tokens["supervisor"]))
    assert_matches_spec(response, "/api/agents")
    assert [(a["code"], a["state"], a["reason"]) for a in response.get_json()["items"]] == [
        ("1001", "available", ""), ("1002", "paused", "lunch"), ("1003", "logged_out", "")]
    own = client.get("/api/agents", headers=bearer(agent_tokens["1002"]))
    assert_matches_spec(own, "/api/agents")
    [me] = own.get_json()["items"]
    assert (me["code"], me["name"], me["state"], me["queues"]) == ("1002", "Li Lei", "paused", ["water"])
    assert client.get("/api/agents", headers=bearer(agent_tokens["none"])).status_code == 403
    assert client.get("/api/agents", headers=bearer(tokens["dept:water"])).status_code == 403


def test_a_pause_is_asked_of_asterisk_and_shows_when_asterisk_confirms(client, services, agents,  # noqa: F811
                                                                        agent_tokens):
    busy_minute(services)
    response = client.post("/api/agents/1001/pause", json={"reason": "training"}, headers=bearer(agent_tokens["1001"]))
    assert response.status_code == 202
    assert_matches_spec(response, "/api/agents/{code}/pause", "post")
    assert response.get_json() | {"message": ""} == {
        "action": "pause", "agent": "1001", "interface": "PJSIP/agent1001", "queues": [], "paused": True,
        "reason": "training", "confirmed": False, "message": ""}
    assert services.queue_control.asked == [("pause", "PJSIP/agent1001", True, "training", "")]
    state = lambda: client.get("/api/agents", headers=bearer(agent_tokens["1001"])).get_json()["items"][0]  # noqa: E731
    assert state()["state"] == "available"  # asked, not yet done
    t = time.time()
    happen(services, ev.MemberPaused(t, "water", "1001", True, "training"),
           ev.MemberPaused(t, "general", "1001", True, "training"))
    assert (state()["state"], state()["reason"]) == ("paused", "training")


@pytest.mark.parametrize("action,body,asked", [
    ("login", None, [("add", "general", "PJSIP/agent1001", "1001", 1, False, ""),
                     ("add", "water", "PJSIP/agent1001", "1001", 0, False, "")]),
    ("logout", None, [("remove", "general", "PJSIP/agent1001"), ("remove", "water", "PJSIP/agent1001")]),
    ("unpause", {}, [("pause", "PJSIP/agent1001", False, "", "")]),
    ("pause", {"reason": "家里有事，离开十分钟"}, [("pause", "PJSIP/agent1001", True, "家里有事，离开十分钟", "")]),
])
def test_each_desk_action_for_a_supervisor(client, services, agents, tokens, action, body, asked):  # noqa: F811
    response = client.post(f"/api/agents/1001/{action}", json=body, headers=bearer(tokens["supervisor"]))
    assert response.status_code == 202, response.get_json()
    assert_matches_spec(response, f"/api/agents/{{code}}/{action}", "post")
    assert sorted(services.queue_control.asked) == sorted(asked)


def test_an_agent_acts_only_for_itself(client, services, agents, agent_tokens, tokens):  # noqa: F811
    for token in (agent_tokens["1001"], agent_tokens["none"], tokens["dept:water"]):
        response = client.post("/api/agents/1002/unpause", headers=bearer(token))
        assert response.status_code == 403
        assert_matches_spec(response, "/api/agents/{code}/unpause", "post")
    assert client.post("/api/agents/1002/unpause").status_code == 401
    assert services.queue_control.asked == []


@pytest.mark.parametrize("body,content_type,status", [
    ({}, None, 400), ({"reason": 5}, None, 400), ({"reason": "x" * 65}, None, 400), ({"reason": "   "}, None, 400),
    ({"reason": "lunch", "minutes": 10}, None, 400), ("[1]", "application/json", 400),
    ("reason=lunch", "text/plain", 415),
])
def test_a_bad_pause_body_is_refused(client, services, agents, tokens, body, content_type, status):  # noqa: F811
    kwargs = {"json": body} if content_type is None else {"data": body, "content_type": content_type}
    response = client.post("/api/agents/1001/pause", headers=bearer(tokens["supervisor"]), **kwargs)
    assert response.status_code == status
    assert_matches_spec(response, "/api/agents/{code}/pause", "post")
    assert services.queue_control.asked == []


def test_refusals_say_why(client, services, agents, tokens, agent_tokens):  # noqa: F811
    supervisor = bearer(tokens["supervisor"])
    unknown = client.post("/api/agents/9999/login", headers=supervisor)
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "agent_not_found")
    assert client.post("/api/agents/9999/login", headers=bearer(agent_tokens["9999"])).status_code == 404
    no_queue = client.post("/api/agents/1003/login", headers=supervisor)
    assert (no_queue.status_code, no_queue.get_json()["error"]) == (409, "agent_not_ready")
    assert_matches_spec(no_queue, "/api/agents/{code}/login", "post")
    services.agents.update("1002", active=False)
    inactive = client.post("/api/agents/1002/unpause", headers=supervisor)
    assert (inactive.status_code, inactive.get_json()["error"]) == (409, "agent_inactive")

    services.queue_control.refuse = QueueControlUnavailable("the AMI link is down")
    down = client.post("/api/agents/1001/login", headers=supervisor)
    assert (down.status_code, down.get_json()["error"]) == (503, "asterisk_unavailable")
    assert "Asterisk cannot be reached" in down.get_json()["message"] and down.headers["Retry-After"]
    assert_matches_spec(down, "/api/agents/{code}/login", "post")
    services.queue_control.refuse = QueueControlError("Interface not found")
    refused = client.post("/api/agents/1001/unpause", headers=supervisor)
    assert (refused.status_code, refused.get_json()["error"]) == (409, "asterisk_refused")
    assert "Interface not found" in refused.get_json()["message"]
    assert_matches_spec(refused, "/api/agents/{code}/unpause", "post")
    assert client.post("/api/agents/1001/dance", headers=supervisor).status_code == 404


# --- the live streams -----------------------------------------------------------------------------------

def test_the_wallboard_stream_sends_the_document_and_again_on_each_change(served, services, agents,  # noqa: F811
                                                                         tokens):
    t = busy_minute(services)
    stream = Events(served, "/api/queues/stream", bearer(tokens["supervisor"]))
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        name, document = stream.next()
        assert name == "queues" and stream.retry == live.RETRY_MS
        assert document["hotline"]["figures"]["offered"] == 4
        happen(services, ev.CallerJoined(t + 50, "water", "c5", caller="13600136000"))
        _, document = stream.until(lambda n, d: n == "queues" and d["hotline"]["figures"]["offered"] == 5)
        assert scope(document, "water")["figures"]["waiting"] == 2
        happen(services, ev.MemberPaused(time.time(), "water", "1002", False))  # presence changes count too
        stream.until(lambda n, d: n == "queues" and d["hotline"]["agents"]["paused"] == 0)
        stream.until(lambda n, d: n == ":")  # heartbeats while nothing happens
    finally:
        stream.close()


def test_the_agents_stream_pops_the_ticket_of_a_call_that_connects(served, services, agents,  # noqa: F811
                                                                    agent_tokens):
    busy_minute(services)
    stream = Events(served, "/api/agents/me/stream", bearer(agent_tokens["1001"]))
    try:
        name, state = stream.next()
        assert (name, state["code"], state["state"]) == ("state", "1001", "available")
        t = time.time()
        happen(services, ev.CallerJoined(t, "water", "c9", caller="13600136000", ticket="2026030200009"),
               ev.AgentRang(t + 1, "water", "c9", "1001", "PJSIP/agent1001"))
        stream.until(lambda n, d: n == "state" and d["state"] == "ringing")
        happen(services, ev.CallAnswered(t + 3, "water", "c9", "1001", hold_seconds=3, ticket="2026030200009"))
        _, call = stream.until(lambda n, d: n == "call")
        assert call == {"call_id": "c9", "ticket": "2026030200009", "queue": "water",
                        "url": "/desk/tickets/2026030200009"}
        happen(services, ev.CallCompleted(t + 60, "water", "c9", "1001", hold_seconds=3, talk_seconds=57))
        stream.until(lambda n, d: n == "state" and d["state"] == "available")
        assert "event: call" not in stream.text.split("event: call", 1)[1]  # announced once
        happen(services, ev.MemberPaused(t + 61, "water", "1002", False))  # another agent: not for this stream
        happen(services, ev.MemberPaused(t + 62, "water", "1001", True, "break"),
               ev.MemberPaused(t + 62, "general", "1001", True, "break"))
        _, state = stream.until(lambda n, d: n == "state" and d["state"] != "available")
        assert (state["code"], state["state"], state["reason"]) == ("1001", "paused", "break")
    finally:
        stream.close()


def test_streams_work_with_the_desk_session_and_check_roles(served, client, services, agents, tokens,  # noqa: F811
                                                            agent_tokens):
    wallboard = Events(served, "/api/queues/stream", session_cookie(client, tokens["supervisor"]))
    try:
        assert wallboard.next()[0] == "queues"
    finally:
        wallboard.close()
    client.post("/logout", data={"csrf": session_csrf(client)})
    agent = Events(served, "/api/agents/me/stream", session_cookie(client, agent_tokens["1002"]))
    try:
        name, state = agent.next()
        assert (name, state["code"]) == ("state", "1002")
    finally:
        agent.close()
    assert client.get("/api/queues/stream").status_code == 403  # an agent's session: not the wallboard
    client.post("/logout", data={"csrf": session_csrf(client)})
    assert client.get("/api/agents/me/stream").status_code == 401
    assert client.get("/api/agents/me/stream", headers=bearer(tokens["supervisor"])).status_code == 403
    assert client.get("/api/agents/me/stream", headers=bearer(agent_tokens["none"])).status_code == 403


def test_streams_are_capped_and_a_closed_one_gives_its_place_back(served, client, services, agents,  # noqa: F811
                                                                  tokens):
    hub = live_hub(client.application)
    first, second = (Events(served, "/api/queues/stream", bearer(tokens["supervisor"])) for _ in range(2))
    try:
        assert first.next()[0] == second.next()[0] == "queues"
        full = client.get("/api/queues/stream", headers=bearer(tokens["supervisor"]))
        assert (full.status_code, full.get_json()["error"]) == (503, "streams_full")
        assert full.headers["Retry-After"]
        assert_matches_spec(full, "/api/queues/stream")
        first.close()
        wait_for(lambda: hub.open_streams < 2, "the closed stream's place")
        third = Events(served, "/api/queues/stream", bearer(tokens["supervisor"]))
        assert third.response.status == 200
        third.close()
    finally:
        first.close()
        second.close()


def test_a_stream_ends_by_itself_and_tells_the_browser_when_to_come_back(served, client, services,  # noqa: F811
                                                                         tokens):
    hub = live_hub(client.application)
    hub.stream_seconds = 0.5
    stream = Events(served, "/api/queues/stream", bearer(tokens["supervisor"]))
    try:
        assert stream.next()[0] == "queues"
        with pytest.raises(EOFError):
            while True:
                stream.next()
        assert stream.retry == live.RETRY_MS
    finally:
        stream.close()
    wait_for(lambda: hub.open_streams == 0, "the ended stream's place")


def test_closing_the_hub_ends_every_stream(served, client, services, tokens):  # noqa: F811
    stream = Events(served, "/api/queues/stream", bearer(tokens["supervisor"]))
    try:
        assert stream.next()[0] == "queues"
        shutdown(client.application)
        with pytest.raises(EOFError):
            while True:
                stream.next()
    finally:
        stream.close()
    refused = client.get("/api/queues/stream", headers=bearer(tokens["supervisor"]))
    assert refused.status_code == 503


def test_the_hub_survives_redis_going_away_and_coming_back():
    with throwaway_redis() as server:
        hub = live.LiveHub(server.client(), figures_channel="t:changed", agents_channel="t:agents", max_streams=4)
        inbox = hub.open({live.FIGURES})
        heard: list = []

        def hears(kind) -> bool:
            heard.extend(inbox.take(0.05))
            return any(k == kind for k, _ in heard)

        try:
            publisher = server.client()
            wait_for(lambda: hub.connected, "the hub's subscription")
            publisher.publish("t:changed", json.dumps({"queues": ["water"]}))
            wait_for(lambda: hears(live.FIGURES), "a message")
            publisher.close()
            server.kill9()
            wait_for(lambda: not hub.connected, "the hub to notice Redis is gone")
            server.start()
            wait_for(lambda: hub.connected, "the hub to subscribe again")
            heard.clear()
            wait_for(lambda: hears(live.RESYNC), "the streams told to read everything again")
            heard.clear()
            publisher = server.client()
            publisher.publish("t:changed", "{}")
            wait_for(lambda: hears(live.FIGURES), "a message after the outage")
            publisher.close()
            assert inbox.take(0) == [] and hub.open_streams == 1  # the stream stayed open throughout
        finally:
            hub.close()
    assert not hub.connected


def test_one_listener_for_all_streams_and_agents_get_only_their_own(redis_conn, redis_prefix):
    hub = live.LiveHub(redis_conn, figures_channel=f"{redis_prefix}changed", agents_channel=f"{redis_prefix}agents",
                       max_streams=3)
    try:
        wallboard, mine, theirs = hub.open({live.FIGURES, live.AGENTS}), hub.open({live.AGENTS}, "1001"), \
            hub.open({live.AGENTS}, "1002")
        with pytest.raises(live.StreamsFull):
            hub.open({live.FIGURES})
        wait_for(lambda: hub.connected, "the subscription")
        redis_conn.publish(f"{redis_prefix}agents", json.dumps({"code": "1001", "state": "paused"}))
        redis_conn.publish(f"{redis_prefix}changed", "{}")
        got: list = []
        wait_for(lambda: got.extend(wallboard.take(0.05)) or len(got) >= 2, "both messages on the wallboard")
        assert [k for k, _ in got] == [live.AGENTS, live.FIGURES]
        assert [m for _, m in mine.take(WAIT)] == [{"code": "1001", "state": "paused"}]
        assert theirs.take(0) == []
        mine.close()
        hub.open({live.FIGURES}).close()  # its place was given back
    finally:
        hub.close()


# --- the desk pages ----------------------------------------------------------------------------------------

def _tile(page: str, tile: str) -> str:
    return re.search(rf'id="{tile}"><div class="tile-label">[^<]*</div><div class="tile-value">([^<]*)<', page).group(1)


@pytest.mark.parametrize("lang,words", [("zh-CN", ("话务实时监控", "今日呼入", "用餐", "示忙")),
                                        ("en", ("Wallboard", "Offered today", "Lunch", "Paused"))])
def test_the_wallboard_shows_the_figures_without_javascript(client, services, agents, tokens, lang,  # noqa: F811
                                                            words):
    busy_minute(services)
    login(client, tokens["supervisor"], lang)
    page = client.get("/desk/wallboard")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert all(word in text for word in words)
    tiles = ("t-waiting", "t-offered", "t-answered", "t-abandoned", "t-service", "t-asa", "t-aht")
    assert [_tile(text, t) for t in tiles] == ["1", "4", "1", "2", "33.3%", "0:10", "0:28"]
    assert 'id="t-connection"' in text and 'class="tile late" id="t-connection"' in text  # 33.3 % < 95 %
    assert "+86138****8000" in text and TICKETS["c2"] in text
    assert 'href="/desk/wallboard"' in text and 'src="/desk/static/wallboard.js"' in text


def test_the_wallboard_is_for_supervisors(client, services, tokens, agent_tokens):  # noqa: F811
    login(client, agent_tokens["1001"])
    assert client.get("/desk/wallboard").status_code == 403
    client.post("/logout", data={"csrf": session_csrf(client)})
    assert client.get("/desk/wallboard").status_code == 302


def test_the_agents_panel_shows_its_state_and_asks_asterisk(client, services, agents, agent_tokens):  # noqa: F811
    busy_minute(services)
    login(client, agent_tokens["1001"])
    page = client.get("/desk/tickets").get_data(as_text=True)
    assert 'id="agent-panel"' in page and 'data-state="available"' in page and "空闲" in page
    assert 'src="/desk/static/agent.js"' in page
    assert all(label in page for label in ("小休", "用餐", "培训", "会议", "话后处理"))
    assert re.search(r'<form[^>]+action="/desk/agent/login"[^>]+hidden', page)  # logged in already

    response = client.post("/desk/agent/pause", data={"csrf": session_csrf(client), "reason": "meeting",
                                                      "next": "/desk/tickets?status=queued"})
    assert response.status_code == 302 and response.headers["Location"] == "/desk/tickets?status=queued"
    assert services.queue_control.asked == [("pause", "PJSIP/agent1001", True, "meeting", "")]
    assert "已请求示忙" in client.get("/desk/tickets").get_data(as_text=True)

    services.queue_control.refuse = QueueControlUnavailable("down")
    client.post("/desk/agent/unpause", data={"csrf": session_csrf(client)})
    assert "暂时无法连接交换机" in client.get("/desk/tickets?lang=zh-CN").get_data(as_text=True)
    assert client.post("/desk/agent/unpause", data={}).status_code == 400  # no CSRF token
    assert client.post("/desk/agent/dance", data={"csrf": session_csrf(client)}).status_code == 404


def test_an_agent_token_without_an_agent_code_has_no_panel(client, services, tokens):  # noqa: F811
    login(client, tokens["agent"])
    assert 'id="agent-panel"' not in client.get("/desk/tickets").get_data(as_text=True)
    assert client.post("/desk/agent/login", data={"csrf": session_csrf(client)}).status_code == 403


# --- no citizen's number in full, anywhere -------------------------------------------------------------------

def test_no_full_caller_number_in_any_answer(served, client, services, agents, tokens, agent_tokens):  # noqa: F811
    busy_minute(services)
    supervisor = bearer(tokens["supervisor"])
    answers = [client.get("/api/queues", headers=supervisor).get_data(as_text=True),
               client.get("/api/agents", headers=supervisor).get_data(as_text=True),
               client.get("/api/agents", headers=bearer(agent_tokens["1001"])).get_data(as_text=True),
               client.get("/metrics").get_data(as_text=True)]
    login(client, tokens["supervisor"])
    for lang in ("zh-CN", "en"):
        answers.append(client.get(f"/desk/wallboard?lang={lang}").get_data(as_text=True))
    for path, token in (("/api/queues/stream", tokens["supervisor"]), ("/api/agents/me/stream", agent_tokens["1001"])):
        stream = Events(served, path, bearer(token))
        try:
            stream.next()
            answers.append(stream.text)
        finally:
            stream.close()
    assert "****" in answers[0]
    for text in answers:
        digits = re.sub(r"[\s\-()]", "", text)
        for forms in FULL_FORMS.values():
            for form in forms:
                assert form not in digits, form


# --- Prometheus ----------------------------------------------------------------------------------------------

def test_the_metrics_read_the_live_figures_at_scrape(client, services, agents):  # noqa: F811
    busy_minute(services)
    text = client.get("/metrics").get_data(as_text=True)
    for line in ('hotline_queue_figures_up 1.0', 'hotline_queue_waiting_calls{queue="water"} 1.0',
                 'hotline_queue_offered_today{queue="_hotline"} 4.0',
                 'hotline_queue_abandoned_today{queue="general"} 1.0',
                 'hotline_queue_short_abandoned_today{queue="_hotline"} 1.0',
                 'hotline_queue_agents{queue="water",state="paused"} 1.0',
                 'hotline_queue_agents{queue="_hotline",state="available"} 1.0'):
        assert line in text, line
    assert re.search(r'hotline_queue_service_level_ratio\{queue="_hotline"\} 0\.333', text)
    assert re.search(r'hotline_queue_longest_wait_seconds\{queue="water"\} (4[2-9]|[5-9]\d)', text)
    happen(services, ev.CallerJoined(time.time(), "water", "c5", caller="13600136000"))
    assert 'hotline_queue_waiting_calls{queue="water"} 2.0' in client.get("/metrics").get_data(as_text=True)


def test_the_metrics_still_answer_when_redis_is_down(client, services, redis_down):  # noqa: F811
    services.queue_statistics = QueueStatistics(redis_down, prefix="down:")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "hotline_queue_figures_up 0.0" in response.get_data(as_text=True)
