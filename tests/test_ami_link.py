"""The AMI link against a scripted Asterisk manager on a real TCP socket (tests/ami_peer.py).

Nothing here measures time: each test waits for a condition with a generous limit, and relies on the
order of one TCP stream (an event sent before a response is handled before the action returns).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time

import pytest

from ami.control import AmiQueueControl
from ami.translate import EventTranslator
from ami.link import (
    MAX_MESSAGE_BYTES,
    AmiActionFailed,
    AmiDisconnected,
    AmiEvent,
    AmiLink,
    AmiResponse,
    AmiTimeout,
    _Protocol,
    parse_message,
    reconnect_delays,
)
from base import metrics
from queues.control import QueueControlError, QueueControlUnavailable
from tests.ami_peer import AmiPeer, event, fixture_messages, response
from tests.servers import free_port

SECRET = "s3cret-do-not-log"


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sample(name: str, **labels) -> float:
    return metrics.registry().get_sample_value(name, labels) or 0.0


def list_answer(action, *events) -> list[str]:
    """An event list as Asterisk sends it: Success, the events (carrying the ActionID), the Complete."""
    aid = ("ActionID", action.action_id)
    return [response(action, "Queue status will follow", "Success", ("EventList", "start")),
            *[event(name, *pairs, aid) for name, pairs in events],
            event("QueueStatusComplete", aid, ("EventList", "Complete"), ("ListItems", len(events)))]


@pytest.fixture
def peer():
    with AmiPeer(secret=SECRET) as p:
        yield p


@pytest.fixture
def links():
    made: list[AmiLink] = []

    def make(port: int, secret: str = SECRET, **kwargs) -> AmiLink:
        link = AmiLink("127.0.0.1", port, "hotline", secret, **kwargs)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()
        assert link._thread is None or not link._thread.is_alive(), "close() left the link's thread running"


@pytest.fixture
def connected(peer, links):
    """A started link logged in to ``peer``, with the events it handed to on_event."""
    got: list[AmiEvent] = []
    link = links(peer.port, on_event=got.append).start()
    assert link.wait_connected(10)
    link.got = got
    return link


def names(events) -> list[str]:
    return [e.name for e in events if e.name != "FullyBooted"]


# -- back-off ---------------------------------------------------------------------------------------------

def test_reconnect_delays_double_from_half_a_second_up_to_the_maximum():
    assert list(itertools.islice(reconnect_delays(30.0), 9)) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert list(itertools.islice(reconnect_delays(5.0), 6)) == [0.5, 1, 2, 4, 5, 5]
    assert list(itertools.islice(reconnect_delays(0.5), 3)) == [0.5, 0.5, 0.5]
    assert list(itertools.islice(reconnect_delays(0.0), 2)) == [0.5, 0.5]  # never a hot loop


# -- login ------------------------------------------------------------------------------------------------

def test_login_with_events_on_runs_on_connect_and_sets_the_gauge(peer, links):
    seen = []
    before = sample("hotline_ami_connected")
    link = links(peer.port, on_connect=seen.append).start()
    assert link.wait_connected(10) and link.connected
    assert wait_until(lambda: seen == [link])
    assert peer.logins == 1 and peer.login_events == ["on"]
    login = peer.received("Login")[0]
    assert login.get("Username") == "hotline" and login.get("Secret") == SECRET and login.action_id
    assert sample("hotline_ami_connected") == before + 1
    link.close()
    assert sample("hotline_ami_connected") == before


def test_events_off_at_login_for_a_process_that_only_sends_actions(peer, links):
    got = []
    link = links(peer.port, events=False, on_event=got.append).start()
    assert link.wait_connected(10)
    assert peer.login_events == ["off"]
    peer.script["Ping"] = lambda s, a: (peer.push(event("QueueMemberStatus", ("Queue", "support"))),
                                        s.send(response(a)))
    assert link.action("Ping").success
    assert names(got) == []  # the peer keeps events from an events-off session, as Asterisk does


def test_a_refused_login_backs_off_and_never_logs_the_secret(peer, links, caplog):
    caplog.set_level(logging.DEBUG)
    link = links(peer.port, secret="wrong-" + SECRET).start()
    assert peer.wait_for(lambda: peer.refused_logins >= 3, timeout=20)
    assert list(link.waits)[:2] == [0.5, 1.0]
    assert peer.refused_logins <= len(link.waits) + 1  # each new try came after a wait
    assert not link.connected and peer.logins == 0
    with pytest.raises(AmiDisconnected):
        link.action("Ping")
    text = caplog.text + repr(link)
    assert "login refused for user 'hotline': Authentication failed" in text
    assert SECRET not in text


def test_nothing_listening_means_disconnected_at_once(links):
    link = links(free_port()).start()
    with pytest.raises(AmiDisconnected):
        link.action("Ping")
    assert wait_until(lambda: len(link.waits) >= 1)
    assert not link.connected


# -- actions ----------------------------------------------------------------------------------------------

def test_responses_are_matched_by_action_id_out_of_order_and_between_events(peer, connected):
    held = []
    peer.script["Slow"] = lambda s, a: held.append(a)

    def fast(s, a):
        s.send(event("QueueMemberStatus", ("Queue", "support"), ("Status", "2")),
               response(a, "fast done"),
               event("AgentCalled", ("Queue", "support")),
               event("Newchannel", ("Channel", "SIP/x")),
               response(held[0], "slow done"),
               event("Hangup", ("Channel", "SIP/x")))

    peer.script["Fast"] = fast
    slow_result = []
    slow = threading.Thread(target=lambda: slow_result.append(connected.action("Slow")))
    slow.start()
    assert peer.wait_for(lambda: held)
    fast_answer = connected.action("Fast")
    slow.join(10)
    assert fast_answer.message == "fast done" and slow_result[0].message == "slow done"
    assert fast_answer.action_id != slow_result[0].action_id
    assert names(connected.got) == ["QueueMemberStatus", "AgentCalled", "Newchannel", "Hangup"]


def test_many_threads_share_one_link(peer, connected):
    peer.script["Echo"] = lambda s, a: s.send(response(a, "", "Success", ("Token", a.get("Token"))))
    answers: dict[int, str] = {}

    def worker(n):
        for i in range(10):
            token = f"{n}-{i}"
            answers[token] = connected.action("Echo", Token=token).get("Token")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 120 and all(k == v for k, v in answers.items())
    ids = [a.action_id for a in peer.received("Echo")]
    assert len(set(ids)) == 120


def test_an_error_response_raises_with_asterisks_message(peer, connected):
    peer.script["QueueAdd"] = lambda s, a: s.send(response(a, "Unable to add interface: Already there", "Error"))
    before = sample("hotline_ami_actions_failed_total", reason="error")
    with pytest.raises(AmiActionFailed) as caught:
        connected.action("QueueAdd", Queue="support", Interface="SIP/agent2")
    assert caught.value.message == "Unable to add interface: Already there"
    assert sample("hotline_ami_actions_failed_total", reason="error") == before + 1


def test_a_list_value_sends_the_header_once_per_item_and_given_ids_are_kept(peer, connected):
    peer.script["Originate"] = lambda s, a: s.send(response(a, "Originate successfully queued"))
    answer = connected.action("Originate", Channel="Local/1@x", Variable=["A=1", "B=two"], Async=True,
                              Account=None, ActionID="cb-7")
    sent = peer.received("Originate")[0]
    assert sent.all("Variable") == ["A=1", "B=two"] and sent.get("Async") == "true"
    assert sent.get("Account", None) is None
    assert sent.action_id == "cb-7" and answer.action_id == "cb-7" and answer.success


def test_header_values_cannot_forge_another_action(peer, connected):
    with pytest.raises(ValueError):
        connected.action("QueuePause", Interface="SIP/a", Reason="x\r\nAction: Originate")
    with pytest.raises(ValueError):
        connected.action("QueuePause", **{"Bad Name": "x"})
    assert [a.name for a in peer.actions] == ["Login"]


def test_originate_and_queue_add_complete_on_their_response(peer, connected):
    """panoramisk would wait after "Originate successfully queued" and "Added interface to queue"."""
    peer.script["Originate"] = lambda s, a: s.send(response(a, "Originate successfully queued"))
    peer.script["QueueAdd"] = lambda s, a: s.send(response(a, "Added interface to queue"))
    assert connected.action("Originate", Channel="Local/1@x", Async=True, ActionID="cb-1").success
    assert connected.action("QueueAdd", Queue="support", Interface="SIP/agent2").success
    peer.push(event("OriginateResponse", ("ActionID", "cb-1"), ("Response", "Success"), ("Reason", "4")))
    connected.action("Ping")  # after the event on the same stream
    assert names(connected.got) == ["OriginateResponse"]
    assert connected.got[-1].action_id == "cb-1"


def test_a_silent_asterisk_times_out_and_a_late_answer_is_dropped(peer, links):
    got = []
    link = links(peer.port, action_timeout=0.3, on_event=got.append).start()
    assert link.wait_connected(10)
    held = []
    peer.script["Never"] = lambda s, a: held.append((s, a))
    before = sample("hotline_ami_actions_failed_total", reason="timeout")
    with pytest.raises(AmiTimeout):
        link.action("Never")
    assert sample("hotline_ami_actions_failed_total", reason="timeout") == before + 1
    session, late = held[0]
    session.send(response(late, "too late"))
    assert link.action("Ping").success and link.connected
    assert names(got) == []


# -- event lists --------------------------------------------------------------------------------------------

def test_an_event_list_is_collected_to_its_complete_event(peer, connected):
    def queue_status(s, a):
        answer = list_answer(a, ("QueueParams", [("Queue", "support")]), ("QueueMember", [("Name", "Agent Two")]),
                             ("QueueEntry", [("Uniqueid", "1.2"), ("Wait", "4")]))
        s.send(answer[0], answer[1], event("QueueMemberStatus", ("Queue", "support")), answer[2],
               event("QueueSummary", ("ActionID", "someone-else")), answer[3], answer[4])

    peer.script["QueueStatus"] = queue_status
    events = connected.action_list("QueueStatus")
    assert [e.name for e in events] == ["QueueParams", "QueueMember", "QueueEntry"]
    assert events[2].get("Wait") == "4" and all(e.action_id == events[0].action_id for e in events)
    assert names(connected.got) == ["QueueMemberStatus", "QueueSummary"]


def test_a_refused_list_action_raises(peer, connected):
    peer.script["QueueStatus"] = lambda s, a: s.send(response(a, "Permission denied", "Error"))
    with pytest.raises(AmiActionFailed, match="Permission denied"):
        connected.action_list("QueueStatus")


# -- dropped connections ----------------------------------------------------------------------------------

def test_dropped_mid_list_fails_at_once_then_reconnects_and_resyncs(peer, links):
    results = []
    asked = []

    def queue_status(s, a):
        asked.append(a)
        answer = list_answer(a, ("QueueParams", [("Queue", "support")]), ("QueueMember", [("Name", "Agent Two")]))
        s.send(*answer[:2])
        if len(asked) == 1:
            s.close()  # Asterisk restarts halfway through the list
        else:
            s.send(*answer[2:])

    def on_connect(link):
        try:
            results.append(link.action_list("QueueStatus"))
        except AmiDisconnected as exc:
            results.append(exc)

    peer.script["QueueStatus"] = queue_status
    link = links(peer.port, action_timeout=120, on_connect=on_connect)
    link.start()
    assert wait_until(lambda: len(results) >= 2, timeout=30)  # far sooner than the action's 120 s
    assert isinstance(results[0], AmiDisconnected)
    assert [e.name for e in results[1]] == ["QueueParams", "QueueMember"]
    assert peer.logins == 2 and list(link.waits) == [0.5] and link.logins == 2


def test_an_action_in_flight_fails_when_the_connection_drops_and_is_not_resent(peer, links):
    link = links(peer.port, action_timeout=120).start()
    assert link.wait_connected(10)
    peer.script["Hold"] = lambda s, a: None
    failures = []

    def ask():
        try:
            link.action("Hold")
        except AmiDisconnected as exc:
            failures.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    assert peer.wait_for(lambda: peer.received("Hold"))
    peer.drop()
    asking.join(30)
    assert failures and not asking.is_alive()
    assert peer.wait_for(lambda: peer.logins == 2, timeout=30)
    assert link.wait_connected(10) and link.action("Ping").success
    assert len(peer.received("Hold")) == 1


def test_a_peer_that_stops_answering_pings_is_dropped(peer, links):
    link = links(peer.port, action_timeout=0.3)
    link.keepalive_seconds = 0.1
    peer.script["Ping"] = lambda s, a: None
    link.start()
    assert peer.wait_for(lambda: peer.logins >= 2, timeout=30)


def test_close_stops_reconnecting(peer, links):
    link = links(peer.port).start()
    assert link.wait_connected(10)
    link.close()
    link.close()
    assert not link._thread.is_alive() and not link.connected
    assert peer.connections == 1
    with pytest.raises(AmiDisconnected):
        link.action("Ping")
    with pytest.raises(RuntimeError):
        link.start()


# -- what Asterisk (or an impostor) sends ---------------------------------------------------------------------

def test_a_recorded_session_replayed_over_the_socket_translates_as_read_from_the_file(peer, connected):
    sent = peer.replay("ami-queue-events.txt")
    connected.action("Ping")  # after the whole replay on the same stream
    live, offline = EventTranslator(clock=lambda: 1.0), EventTranslator(clock=lambda: 1.0)
    over_socket = [q for e in connected.got for q in live.translate(e)]
    from_file = [q for text in fixture_messages("ami-queue-events.txt")
                 if isinstance(m := parse_message(text), AmiEvent) for q in offline.translate(m)]
    assert sent == 312 and len(from_file) == 43 and over_socket == from_file


def test_empty_values_and_every_chan_variable_form_arrive(peer, connected):
    peer.push(b"Event: QueueCallerJoin\r\nAccountCode:\r\nPausedReason: \r\n"
              b"ChanVariable: HOTLINE_TICKET=HL-20261128-0001\r\nChanVariable: EMPTY=\r\n"
              b"ChanVariable(Local/12345@incoming-00000000;1): OTHER=a=b\r\n"
              b"ChanVariable(IAX2/10.0.0.1:4569-7): VIA=iax\r\n"
              b"DestChanVariable: HOTLINE_TICKET=\r\nDestChanVariable(PJSIP/agent1001-0000001): AGENT=1001\r\n"
              + "CallerIDName: 张三\r\nQueue: support\r\n\r\n".encode())
    connected.action("Ping")
    joined = connected.got[-1]
    assert joined.headers["AccountCode"] == "" and joined.headers["PausedReason"] == ""
    assert joined.chan_vars == {"HOTLINE_TICKET": "HL-20261128-0001", "EMPTY": "", "OTHER": "a=b", "VIA": "iax"}
    assert joined.dest_chan_vars == {"HOTLINE_TICKET": "", "AGENT": "1001"}
    assert joined.get("callerIDname") == "张三" and joined.get("Missing", "-") == "-"


def test_garbage_malformed_and_huge_input_do_not_break_the_link(peer, connected):
    peer.push(b"this is not a header\r\n\r\n", b"\x00\xff\xfe\x80\r\n\r\n", b": no name\r\nEvent\r\n\r\n",
              b"Event: Half\r\nno colon on this line\r\nQueue: support\r\n\r\n",
              b"Event: Huge\r\nData: " + b"x" * (2 * MAX_MESSAGE_BYTES) + b"\r\n\r\n",
              b"\r\n\r\n\r\n", event("AfterGarbage", ("Queue", "support")).encode(), raw=True)
    assert connected.action("Ping").success
    assert names(connected.got) == ["Half", "AfterGarbage"]
    assert next(e for e in connected.got if e.name == "Half").get("Queue") == "support"
    assert connected.connected and peer.connections == 1


def test_a_failing_event_handler_is_logged_and_the_link_goes_on(peer, links, caplog):
    got = []

    def on_event(e):
        got.append(e.name)
        if e.name == "Boom":
            raise RuntimeError("handler bug")

    link = links(peer.port, on_event=on_event).start()
    assert link.wait_connected(10)
    peer.push(event("Boom"), event("After"))
    assert link.action("Ping").success
    assert got[-2:] == ["Boom", "After"] and "handler of a Boom event failed" in caplog.text


def test_an_action_from_the_event_handler_is_refused_not_deadlocked(peer, links):
    outcome = []
    link = None

    def on_event(e):
        if e.name == "Ask":
            try:
                link.action("Ping")
            except RuntimeError as exc:
                outcome.append(exc)

    link = links(peer.port, on_event=on_event).start()
    assert link.wait_connected(10)
    peer.push(event("Ask"))
    assert link.action("Ping").success and len(outcome) == 1


# -- framing and parsing, without a socket ------------------------------------------------------------------

class _Transport:
    def write(self, data):
        pass

    def close(self):
        pass


class _Collector:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.got = []

    def handle(self, protocol, msg):
        self.got.append(msg)


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_framing_survives_any_split_of_the_stream(size):
    stream = ("Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nActionID: a-1\r\nMessage: Authentication "
              "accepted\r\n\r\nEvent: Newchannel\r\nCallerIDName: 张三\r\n\r\nEvent: Bare\n\nEvent: Last\r\n"
              "\r\n").encode()
    collector = _Collector()
    protocol = _Protocol(collector)
    protocol.connection_made(_Transport())
    for i in range(0, len(stream), size):
        protocol.data_received(stream[i:i + size])
    collector.loop.close()
    assert protocol.version == "9.0.0"
    assert isinstance(collector.got[0], AmiResponse) and collector.got[0].action_id == "a-1"
    assert [m.name for m in collector.got[1:]] == ["Newchannel", "Bare", "Last"]
    assert collector.got[1].get("CallerIDName") == "张三"


def test_an_oversized_message_is_discarded_and_the_next_one_read():
    collector = _Collector()
    protocol = _Protocol(collector)
    protocol.connection_made(_Transport())
    protocol.data_received(b"Asterisk Call Manager/9.0.0\r\n")
    blob = b"Event: Huge\r\nData: " + b"y" * (3 * MAX_MESSAGE_BYTES)
    for i in range(0, len(blob), 65536):
        protocol.data_received(blob[i:i + 65536])
    protocol.data_received(b"\r\n\r\nEvent: Next\r\n\r\n")
    collector.loop.close()
    assert [m.name for m in collector.got] == ["Next"]
    assert len(protocol._buffer) < 16


def test_parse_message_kinds():
    assert parse_message("garbage") is None
    assert parse_message("Foo: bar\r\n") is None
    both = parse_message("Event: OriginateResponse\r\nResponse: Failure\r\nActionID: cb-2\r\nReason: 0")
    assert isinstance(both, AmiEvent) and both.get("Response") == "Failure" and both.action_id == "cb-2"
    failed = parse_message("Response: Failure\r\nActionID: x\r\nMessage: Originate failed")
    assert isinstance(failed, AmiResponse) and not failed.success and failed.message == "Originate failed"
    bye = parse_message("Response: Goodbye\r\nMessage: Thanks for all the fish.")
    assert bye.success
    repeated = parse_message("Event: X\r\nVariable: A=1\r\nVariable: B=2")
    assert repeated.headers["Variable"] == "A=1" and [v for k, v in repeated.lines if k == "Variable"] == ["A=1", "B=2"]
    assert "张三" not in repr(parse_message("Event: X\r\nCallerIDName: 张三"))


# -- AmiQueueControl --------------------------------------------------------------------------------------------

def test_queue_control_sends_app_queue_actions_and_shrugs_at_already_there(peer, connected):
    members: set[tuple[str, str]] = set()

    def add(s, a):
        key = (a.get("Queue"), a.get("Interface"))
        if key in members:
            s.send(response(a, "Unable to add interface: Already there", "Error"))
        else:
            members.add(key)
            s.send(response(a, "Added interface to queue"))

    def remove(s, a):
        key = (a.get("Queue"), a.get("Interface"))
        if key in members:
            members.discard(key)
            s.send(response(a, "Removed interface from queue"))
        else:
            s.send(response(a, "Unable to remove interface: Not there", "Error"))

    peer.script.update(QueueAdd=add, QueueRemove=remove,
                       QueuePause=lambda s, a: s.send(response(a, "Interface paused successfully")),
                       QueuePenalty=lambda s, a: s.send(response(a, "Interface penalty set successfully")))
    control = AmiQueueControl(connected)
    for _ in range(2):
        control.add_member("support", "PJSIP/agent1001", "Agent 1001", state_interface="PJSIP/agent1001",
                           penalty=1, paused=True, reason="login")
    control.pause_member("PJSIP/agent1001", True, reason="lunch break")
    control.pause_member("PJSIP/agent1001", False, queue="support")
    control.set_penalty("PJSIP/agent1001", 2)
    for _ in range(2):
        control.remove_member("support", "PJSIP/agent1001")
    added = peer.received("QueueAdd")[0]
    assert added.pairs[0] == ("Action", "QueueAdd") and dict(added.pairs[1:]) == {
        "ActionID": added.action_id, "Interface": "PJSIP/agent1001", "MemberName": "Agent 1001", "Paused": "true",
        "Penalty": "1", "Queue": "support", "Reason": "login", "StateInterface": "PJSIP/agent1001"}
    pause, unpause = peer.received("QueuePause")
    assert (pause.get("Paused"), pause.get("Reason"), pause.get("Queue", None)) == ("true", "lunch break", None)
    assert (unpause.get("Paused"), unpause.get("Reason", None), unpause.get("Queue")) == ("false", None, "support")
    penalty = peer.received("QueuePenalty")[0]
    assert (penalty.get("Penalty"), penalty.get("Queue", None)) == ("2", None)


def test_queue_control_originate_headers(peer, connected):
    peer.script["Originate"] = lambda s, a: s.send(response(a, "Originate successfully queued"))
    AmiQueueControl(connected).originate("cb-42", "PJSIP/agent1001", context="hotline-callback", exten="s",
                                         caller_id='"12345" <12345>', timeout_seconds=25,
                                         variables={"HOTLINE_TICKET": "2026112900013", "CALLBACK_TO": "x,y"})
    sent = peer.received("Originate")[0]
    assert {k: v for k, v in sent.pairs if k != "Variable"} == {
        "Action": "Originate", "ActionID": "cb-42", "Async": "true", "CallerID": '"12345" <12345>',
        "Channel": "PJSIP/agent1001", "Context": "hotline-callback", "Exten": "s", "Priority": "1",
        "Timeout": "25000"}
    assert sent.all("Variable") == ["HOTLINE_TICKET=2026112900013", "CALLBACK_TO=x,y"]


def test_queue_control_refusals_and_a_missing_link(peer, connected, links):
    peer.script["QueuePause"] = lambda s, a: s.send(response(a, "Interface not found", "Error"))
    control = AmiQueueControl(connected)
    with pytest.raises(QueueControlError) as refused:
        control.pause_member("PJSIP/nobody", True)
    assert str(refused.value) == "Interface not found" and not isinstance(refused.value, QueueControlUnavailable)
    with pytest.raises(QueueControlError):
        control.pause_member("PJSIP/agent1001", True, reason="two\nlines")
    down = AmiQueueControl(links(free_port()))
    with pytest.raises(QueueControlUnavailable):
        down.add_member("support", "PJSIP/agent1001", "Agent 1001")
    slow = links(peer.port, action_timeout=0.2).start()
    assert slow.wait_connected(10)
    peer.script["QueueRemove"] = lambda s, a: None
    with pytest.raises(QueueControlUnavailable):
        AmiQueueControl(slow).remove_member("support", "PJSIP/agent1001")
