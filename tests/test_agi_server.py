"""The FastAGI server under bad input: it answers what it can, closes what it must, and keeps serving."""

from __future__ import annotations

import socket
import threading

import pytest

from agi_scripts.registry import DuplicateHandler, HandlerRegistry
from agi_scripts.server import FastAGIServer, ServerLimits
from agi_scripts.simulator import Caller, place_call


class KeysHandler:
    """Asks for one key and hands it back to the dialplan as PRESSED."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.block = False

    def handle(self, agi):
        if self.block:
            self.entered.set()
            self.release.wait(10)
        agi.set_variable("PRESSED", agi.get_digits("hotline/menu", 3000, 1) or "none")


@pytest.fixture
def served():
    handler = KeysHandler()
    registry = HandlerRegistry()
    registry.register("keys", handler)
    server = FastAGIServer(registry, "127.0.0.1", 0,
                           ServerLimits(max_sessions=4, read_timeout=1.0, session_timeout=5, drain_timeout=0.5))
    server.start()
    yield server, handler
    handler.release.set()
    server.shutdown(grace=5)


def _still_serves(server):
    result = place_call(Caller(script="keys", keys=["7"]), *server.address, timeout=10)
    assert result.variables["PRESSED"] == '"7"' or result.variables["PRESSED"] == "7"


def _drain(sock) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _raw_session(address, payload: bytes, read=True) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR) if not read else None
        chunks = []
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
                if read and b"GET DATA" in b"".join(chunks):
                    sock.sendall(b"200 result=3\n")
                    read = False
                elif not read and b"SET VARIABLE" in b"".join(chunks):
                    sock.sendall(b"200 result=1\n")
        except OSError:
            pass
        return b"".join(chunks)


def test_a_normal_session(served):
    server, _ = served
    result = place_call(Caller(script="keys", keys=["5"]), *server.address)
    assert result.variables["PRESSED"] in ("5", '"5"')
    assert result.transcript[-1] == "<<< HANGUP"


def test_script_name_with_query_string_and_args(served):
    server, _ = served
    env = (b"agi_network: yes\nagi_network_script: keys?x=1\nagi_request: agi://127.0.0.1/keys?x=1\n"
           b"agi_arg_1: arg1\nagi_arg_2: arg two\n\n")
    out = _raw_session(server.address, env)
    assert out.startswith(b"GET DATA hotline/menu 3000 1\n")
    _still_serves(server)


@pytest.mark.parametrize("payload", [
    b"",  # connects and closes at once
    b"agi_network: yes\nagi_netw",  # a partial block, then EOF
    b"garbage\x00\xff\xfe line\nnot: an agi line\n\n",  # no script at all
    b"agi_network_script: no-such-handler\n\n",
    b"\n",  # an empty block
    b"agi_network_script: keys\n" + b"x" * 20000 + b"\n\n",  # a line beyond the limit
    b"agi_network_script: keys\n" + b"agi_x: y\n" * 500 + b"\n",  # a block beyond the limit
])
def test_malformed_starts_are_closed_and_the_server_keeps_serving(served, payload):
    server, _ = served
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)
    _still_serves(server)


def test_garbage_replies_end_only_that_session(served):
    server, _ = served
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        assert sock.makefile("rb").readline().startswith(b"GET DATA")
        sock.sendall(b"what is this\n")
        _drain(sock)
    _still_serves(server)


def test_a_silent_client_is_timed_out(served):
    server, _ = served
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"agi_network_script: keys\n")  # never finishes the block
        sock.settimeout(10)
        assert sock.recv(4096) == b""  # the server gave up (read_timeout=1 s) and closed
    _still_serves(server)


def test_asterisk_that_never_answers_a_command_is_timed_out(served):
    server, _ = served
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        data = _drain(sock)
    assert data == b"GET DATA hotline/menu 3000 1\n"
    _still_serves(server)


def test_hangup_line_before_the_reply_is_understood(served):
    server, _ = served
    result = place_call(Caller(script="keys", keys=["1"], hangup_at=1), *server.address)
    assert "PRESSED" not in result.variables
    assert result.caller_hung_up
    _still_serves(server)


def test_sessions_beyond_the_bound_are_closed_at_once_for_the_dialplan_fallback(served):
    server, handler = served
    handler.block = True
    holders = [threading.Thread(target=place_call, args=(Caller(script="keys", keys=["1"]), *server.address),
                                kwargs={"timeout": 15}) for _ in range(4)]
    for t in holders:
        t.start()
    assert handler.entered.wait(5)
    while server.active_sessions < 4:
        handler.entered.wait(0.05)
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        assert _drain(sock) == b""  # closed without a word: the dialplan finds no HOTLINE_QUEUE and falls back
    handler.block = False
    handler.release.set()
    for t in holders:
        t.join(15)
    _still_serves(server)


def test_duplicate_handler_names_fail_at_start_up():
    registry = HandlerRegistry()
    registry.register("incoming", KeysHandler())
    with pytest.raises(DuplicateHandler):
        registry.register("incoming", KeysHandler())


def test_clean_shutdown_waits_for_calls_in_progress():
    handler = KeysHandler()
    handler.block = True
    registry = HandlerRegistry()
    registry.register("keys", handler)
    server = FastAGIServer(registry, "127.0.0.1", 0, ServerLimits(read_timeout=5, drain_timeout=0.5))
    server.start()
    results = []
    t = threading.Thread(target=lambda: results.append(place_call(Caller(script="keys", keys=["4"]), *server.address)))
    t.start()
    assert handler.entered.wait(5)
    stopper = threading.Thread(target=lambda: results.append(server.shutdown(grace=10)))
    stopper.start()
    handler.release.set()
    stopper.join(15)
    t.join(15)
    call = [r for r in results if not isinstance(r, bool)][0]
    assert call.variables["PRESSED"] in ("4", '"4"')
    assert True in results
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=1)


from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_any_bytes_after_a_valid_block_end_only_that_session(served, chunks):
    server, _ = served
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        for chunk in chunks:
            try:
                sock.sendall(chunk + b"\n")
            except OSError:
                break
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)
    _still_serves(server)
