"""The FastAGI server under abuse: slow senders, idle floods, descriptor exhaustion, strangers, surges.

Every server listens on 127.0.0.1 on a port the OS picked; every loop is bounded in count and time.
"""

from __future__ import annotations

import queue
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agi_scripts.channel import AsteriskSilent, LineTransport, SessionExpired, read_environment
from agi_scripts.registry import HandlerRegistry
from agi_scripts.server import FastAGIServer, ListenError, PortInUse, ServerLimits, bind_listener
from agi_scripts.simulator import Caller, place_call
from base import metrics
from config.settings import ConfigError, Settings, load_settings

CHILD = Path(__file__).with_name("agi_server_child.py")
ROOT = Path(__file__).resolve().parents[1]


class KeysHandler:
    """Asks for one key and hands it back as PRESSED; can be held inside handler code (busy) on an Event."""

    def __init__(self):
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.block = False

    def handle(self, agi):
        self.calls += 1
        if self.block:
            self.entered.set()
            self.release.wait(15)
        agi.set_variable("PRESSED", agi.get_digits("hotline/menu", 3000, 1) or "none")


def _serve(limits: ServerLimits, handler: KeysHandler | None = None, **kwargs) -> tuple[FastAGIServer, KeysHandler]:
    handler = handler or KeysHandler()
    registry = HandlerRegistry()
    registry.register("keys", handler)
    server = FastAGIServer(registry, "127.0.0.1", 0, limits, **kwargs)
    server.start()
    return server, handler


@pytest.fixture
def stop():
    """Shut down every server a test started, and let go of anything it held."""
    servers: list[tuple[FastAGIServer, KeysHandler]] = []
    yield servers.append
    for server, handler in servers:
        handler.release.set()
        server.shutdown(grace=5)


def _served(address, keys="7", timeout=15) -> bool:
    result = place_call(Caller(script="keys", keys=[keys]), *address, timeout=timeout)
    return result.variables.get("PRESSED", "").strip('"') == keys


def _closed_without_a_word(sock: socket.socket, timeout: float = 10) -> bool:
    """True when the server closes the connection without sending anything."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _metric(name: str, labels: dict | None = None) -> float:
    return metrics.registry().get_sample_value(name, labels or {}) or 0.0


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _trickle(address, head: bytes, body: bytes, every: float = 0.05, limit: float = 8.0,
             wait_for: bytes = b"") -> tuple[bool, int]:
    """Send ``head``, read until ``wait_for``, then ``body`` one byte every ``every`` s for at most ``limit`` s.

    Returns whether the server closed the connection before the body was all sent, and how many bytes went.
    """
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(head)
        got = b""
        while wait_for and wait_for not in got:
            chunk = sock.recv(4096)
            if not chunk:
                return True, 0
            got += chunk
        end = time.monotonic() + limit
        for sent in range(len(body)):
            if time.monotonic() > end:
                break
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                try:
                    if sock.recv(4096) == b"":
                        return True, sent
                except ConnectionResetError:
                    return True, sent
            try:
                sock.sendall(body[sent:sent + 1])
            except OSError:
                return True, sent
        return False, len(body)


# 1. Slow senders are held to the read timeout and the session budget.

def test_an_agi_block_trickled_byte_by_byte_is_cut_off_at_the_read_timeout(stop):
    server, handler = _serve(ServerLimits(read_timeout=1, session_timeout=60, drain_timeout=0.5))
    stop((server, handler))
    closed, sent = _trickle(server.address, b"agi_network_script: keys\n", b"agi_x: " + b"y" * 400 + b"\n\n")
    assert closed, "the server waited for a block that never finished arriving"
    assert handler.calls == 0
    assert _served(server.address)


def test_a_reply_trickled_byte_by_byte_is_cut_off_at_the_session_budget(stop):
    # read_timeout is longer than the whole trickle: only the session budget (2 s) can end it
    server, handler = _serve(ServerLimits(read_timeout=30, session_timeout=2, drain_timeout=0.5))
    stop((server, handler))
    closed, sent = _trickle(server.address, b"agi_network_script: keys\n\n", b"200 result=1 (" + b"9" * 400 + b")\n",
                            wait_for=b"GET DATA")
    assert closed, "the session outlived its budget"
    assert server.wait_idle(10)
    assert _served(server.address)


def _trickling_peer(sock: socket.socket, data: bytes, every: float = 0.05, limit: float = 8.0) -> threading.Thread:
    def run():
        end = time.monotonic() + limit
        for i in range(len(data)):
            if time.monotonic() > end:
                return
            try:
                sock.sendall(data[i:i + 1])
            except OSError:
                return
            time.sleep(every)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["line", "block"])
def test_a_transport_read_is_bounded_as_a_whole_not_per_recv(kind):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        transport = LineTransport.over_socket(ours, read_timeout=0.5)
        if kind == "line":
            peer = _trickling_peer(theirs, b"200 result=1 (" + b"9" * 400 + b")\n")
            with pytest.raises(AsteriskSilent):
                transport.read_line()
        else:  # every line in time, the block as a whole not
            peer = _trickling_peer(theirs, b"".join(b"agi_x%d: y\n" % i for i in range(400)) + b"\n", every=0.01)
            with pytest.raises(AsteriskSilent, match="block"):
                read_environment(transport)
        assert peer.is_alive(), "the read waited for the trickle to end"


def test_a_transport_read_stops_at_the_session_deadline():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        transport = LineTransport.over_socket(ours, read_timeout=30, deadline=time.monotonic() + 0.5)
        peer = _trickling_peer(theirs, b"200 result=1 (" + b"9" * 400 + b")\n")
        with pytest.raises(SessionExpired):
            transport.read_line()
        assert peer.is_alive(), "the read waited for the trickle to end"


def test_slow_senders_cannot_hold_every_session_slot(stop):
    server, handler = _serve(ServerLimits(max_sessions=4, read_timeout=1, session_timeout=60, drain_timeout=0.5))
    stop((server, handler))
    outcomes: list[bool] = []
    tricklers = [threading.Thread(target=lambda: outcomes.append(
        _trickle(server.address, b"agi_network: yes\n", b"agi_x: " + b"y" * 400 + b"\n\n")[0])) for _ in range(4)]
    for t in tricklers:
        t.start()
    assert _wait_until(lambda: server.active_sessions == 4)
    assert server.wait_idle(6), "slow senders still hold the session slots"
    assert _served(server.address)
    for t in tricklers:
        t.join(15)
    assert outcomes == [True] * 4


# 2. Running out of file descriptors pauses accepting; it does not end the process.

def _lines(stream, into: queue.Queue) -> None:
    for raw in stream:
        into.put(raw.decode("utf-8", "replace"))


def test_running_out_of_descriptors_pauses_accepting_and_the_server_recovers():
    proc = subprocess.Popen([sys.executable, str(CHILD), "--nofile", "64"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fillers: list[socket.socket] = []
    log: queue.Queue[str] = queue.Queue()
    try:
        port = int(proc.stdout.readline())
        threading.Thread(target=_lines, args=(proc.stderr, log), daemon=True).start()
        for _ in range(100):  # idle connections: each holds one of the server's 64 descriptors
            fillers.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        seen: list[str] = []
        end = time.monotonic() + 20
        while not any("EMFILE" in line for line in seen) and time.monotonic() < end:
            try:
                seen.append(log.get(timeout=0.5))
            except queue.Empty:
                pass
        assert any("EMFILE" in line for line in seen), "".join(seen)
        assert proc.poll() is None, "the server died of EMFILE"

        results = []
        caller = threading.Thread(target=lambda: results.append(
            place_call(Caller(script="pid"), "127.0.0.1", port, timeout=30)))
        caller.start()  # waits in the backlog while the descriptors are all taken
        for sock in fillers:
            sock.close()
        caller.join(40)
        assert results and results[0].variables.get("PID", "").strip('"') == str(proc.pid)
        assert proc.poll() is None
    finally:
        for sock in fillers:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            seen.append(log.get(timeout=0.2))
        except queue.Empty:
            break
    paused = sum("pausing accept" in line for line in seen)
    resumed = sum("accepting connections again" in line for line in seen)
    assert paused >= 1 and paused <= resumed + 1, "".join(seen)  # one line per burst, not per failure


# 3. One listening socket: a second server is refused; several servers may accept on one socket.

def test_a_second_server_on_a_port_in_use_refuses_to_start(stop):
    server, handler = _serve(ServerLimits())
    stop((server, handler))
    port = server.address[1]
    with pytest.raises(PortInUse, match=f"127.0.0.1:{port}"):
        FastAGIServer(HandlerRegistry(), "127.0.0.1", port, ServerLimits())
    with pytest.raises(PortInUse, match=f"0.0.0.0:{port}"):
        bind_listener("0.0.0.0", port)
    with pytest.raises(TypeError):
        FastAGIServer(HandlerRegistry(), "127.0.0.1", 0, ServerLimits(), reuse_port=True)
    assert _served(server.address)


def test_an_address_that_is_not_ours_is_a_listen_error():
    with pytest.raises(ListenError, match="192.0.2.1:"):
        bind_listener("192.0.2.1", 0)  # TEST-NET-1: on no interface of this machine


def test_servers_sharing_one_listening_socket_all_serve(stop):
    listener = bind_listener("127.0.0.1", 0)
    first, h1 = _serve(ServerLimits(read_timeout=5, drain_timeout=0.5), listener=listener)
    second, h2 = _serve(ServerLimits(read_timeout=5, drain_timeout=0.5), listener=listener.dup())
    stop((first, h1))
    stop((second, h2))
    address = first.address
    results: list[bool] = []
    callers = [threading.Thread(target=lambda: results.extend(_served(address, str(i % 10)) for i in range(10)))
               for _ in range(6)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert results == [True] * 60
    assert h1.calls + h2.calls == 60
    assert first._thread.is_alive() and second._thread.is_alive()  # racing accepts (EAGAIN) are no error


def _child_on(listener: socket.socket) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(CHILD), "--fd", str(listener.fileno())], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=[listener.fileno()])
    return proc, int(proc.stdout.readline())


def _pid_of_call(port: int) -> str:
    return place_call(Caller(script="pid"), "127.0.0.1", port, timeout=15).variables.get("PID", "").strip('"')


def test_processes_accept_on_an_inherited_socket_and_one_leaving_does_not_close_it():
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    children = []
    try:
        first, first_port = _child_on(listener)
        children.append(first)
        assert first_port == port
        assert _pid_of_call(port) == str(first.pid)
        second, _ = _child_on(listener)
        children.append(second)
        pids = {_pid_of_call(port) for _ in range(20)}
        assert pids <= {str(first.pid), str(second.pid)} and "" not in pids
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        assert _pid_of_call(port) == str(second.pid)
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        listener.close()


# 4. Thousands of idle connections cost no thread each, and their closing at once does not stall the server.

def test_idle_connections_hold_no_thread_and_their_mass_close_leaves_the_server_answering(stop):
    idle = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * idle + 200:  # both ends of each connection live in this process
        if hard != resource.RLIM_INFINITY and hard < 2 * idle + 200:
            pytest.skip(f"needs {2 * idle + 200} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2 * idle + 200, hard))
    server, handler = _serve(ServerLimits(max_sessions=idle + 10, read_timeout=60, drain_timeout=0.5))
    stop((server, handler))
    threads_before = threading.active_count()
    clients = []
    try:
        for i in range(idle):
            sock = socket.create_connection(server.address, timeout=10)
            if i % 2:
                sock.sendall(b"agi_network: yes\n")  # half of them start a block they never finish
            clients.append(sock)
        assert _wait_until(lambda: server.active_sessions == idle, timeout=20)
        assert threading.active_count() <= threads_before + 2, "a thread per idle connection"
    finally:
        for sock in clients:
            sock.close()
    assert _served(server.address, timeout=30)
    assert server.wait_idle(10) and server.active_sessions == 0


# 5. Only the allowed hosts are served.

def test_a_connection_from_a_host_not_allowed_is_closed_at_once_and_no_handler_runs(stop):
    server, handler = _serve(ServerLimits(allowed_hosts=("127.0.0.2/32",), read_timeout=5, drain_timeout=0.5))
    stop((server, handler))
    refused = _metric("hotline_agi_connections_refused_total")
    with socket.create_connection(server.address, timeout=10) as sock:  # from 127.0.0.1
        sock.sendall(b"agi_network_script: keys\n\n")
        assert _closed_without_a_word(sock)
    assert handler.calls == 0
    assert _metric("hotline_agi_connections_refused_total") == refused + 1
    assert server.active_sessions == 0

    with socket.create_connection(server.address, timeout=10, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        rfile = sock.makefile("rb")
        assert rfile.readline().startswith(b"GET DATA")
        sock.sendall(b"200 result=55\n")
        assert rfile.readline().startswith(b"SET VARIABLE PRESSED")
    assert handler.calls == 1


def test_allowed_hosts_read_addresses_networks_and_dual_stack_peers():
    limits = ServerLimits(allowed_hosts=("10.1.2.3", "192.168.0.0/16", "fd00::/8"))
    assert limits.allows("10.1.2.3") and limits.allows("192.168.7.9") and limits.allows("fd00::5")
    assert limits.allows("::ffff:192.168.1.1")  # an IPv4 peer on a dual-stack socket
    assert not limits.allows("10.1.2.4") and not limits.allows("127.0.0.1") and not limits.allows("garbage")
    assert ServerLimits().allows("127.0.0.1") and ServerLimits().allows("::1")
    assert not ServerLimits().allows("10.0.0.1")
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        ServerLimits(allowed_hosts=("10.0.0.1", "10.0.0.300"))


def test_agi_allowed_hosts_setting():
    assert Settings().agi_allowed_hosts == ("127.0.0.0/8", "::1")
    assert Settings(agi_allowed_hosts="10.0.0.5, 10.1.0.0/16,").agi_allowed_hosts == ("10.0.0.5", "10.1.0.0/16")
    assert load_settings(environ={}, agi_allowed_hosts=["10.0.0.5", "::1"]).agi_allowed_hosts == ("10.0.0.5", "::1")
    with pytest.raises(ConfigError, match="agi_allowed_hosts: '10.0.0.5/24'"):
        Settings(agi_allowed_hosts=["10.0.0.1", "10.0.0.5/24"])  # host bits set: which network was meant?
    with pytest.raises(ConfigError, match="agi_allowed_hosts: 'asterisk-1'"):
        Settings(agi_allowed_hosts="asterisk-1")
    with pytest.raises(ConfigError, match="agi_allowed_hosts is empty"):
        Settings(agi_allowed_hosts=" , ")
    with pytest.raises(ConfigError, match="agi_max_busy"):
        Settings(agi_max_busy=0)


def test_agi_allowed_hosts_from_the_environment_and_toml(tmp_path):
    assert load_settings(environ={"HOTLINE_AGI_ALLOWED_HOSTS": "10.0.0.5,10.2.0.0/16"}).agi_allowed_hosts == (
        "10.0.0.5", "10.2.0.0/16")
    toml = tmp_path / "hotline.toml"
    toml.write_text('agi_allowed_hosts = ["10.0.0.5", "fd00::/8"]\n')
    assert load_settings(toml, environ={}).agi_allowed_hosts == ("10.0.0.5", "fd00::/8")


# 6. A process saturated with handler work sheds new calls at once; calls waiting on Asterisk do not count.

def test_new_calls_are_shed_at_once_while_the_server_is_busy_and_served_again_after(stop):
    server, handler = _serve(ServerLimits(max_sessions=10, max_busy=1, read_timeout=5, drain_timeout=0.5))
    stop((server, handler))
    handler.block = True
    held = []
    holder = threading.Thread(target=lambda: held.append(_served(server.address, "3")))
    holder.start()
    assert handler.entered.wait(10)
    assert server.busy_sessions == 1
    shed = _metric("hotline_agi_sessions_shed_total")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"agi_network_script: keys\n\n")
        assert _closed_without_a_word(sock)  # the dialplan finds no HOTLINE_QUEUE and falls back
    assert _metric("hotline_agi_sessions_shed_total") == shed + 1
    assert handler.calls == 1
    handler.block = False
    handler.release.set()
    holder.join(15)
    assert held == [True]
    assert _served(server.address)


def test_a_call_waiting_on_asterisk_is_not_busy(stop):
    server, handler = _serve(ServerLimits(max_sessions=10, max_busy=1, read_timeout=10, drain_timeout=0.5))
    stop((server, handler))
    with socket.create_connection(server.address, timeout=10) as waiting:
        waiting.sendall(b"agi_network_script: keys\n\n")
        rfile = waiting.makefile("rb")
        assert rfile.readline().startswith(b"GET DATA")  # the server now waits on this "Asterisk"
        assert _wait_until(lambda: server.busy_sessions == 0)
        assert _served(server.address, "8")
        assert _served(server.address, "9")
        waiting.sendall(b"200 result=55\n")
        assert rfile.readline().startswith(b"SET VARIABLE PRESSED")
        waiting.sendall(b"200 result=1\n")
    assert server.wait_idle(10)
    assert server.busy_sessions == 0
