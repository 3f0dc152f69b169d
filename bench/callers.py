"""Simulated Asterisk for the benchmarks: many calls from one thread, their waits timed by the kernel.

One selector loop drives every call, each answering as agi_scripts.simulator.SimulatedChannel does. A
command's wait runs from the moment our reply was sent (``time.time()`` just before ``send``) to the
moment the server's next command reached our socket (the kernel's receive timestamp, SO_TIMESTAMPNS,
on the same clock), so a client that falls behind under load does not add its own lag to the server's
figures: the first version of this benchmark, an asyncio client, lagged by up to 0.66 s in the surge
and reported that as the server's wait.

Calls arrive open loop (``rate`` per second, whether or not earlier calls have ended) or closed loop
(``lanes``, each starting its next call when the last one ends), and may think before each key press.
Every run is bounded by a call count and a deadline; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import random
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

from agi_scripts.simulator import Caller, SimulatedChannel

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python does not name it
_ANCILLARY = socket.CMSG_SPACE(16)  # one struct timespec
# Asterisk's uniqueids are "epoch.sequence"; the sequence starts per process so that two benchmark
# processes in the same second never present the same call twice (the store refuses that, rightly).
_SEQUENCE = itertools.count(os.getpid() * 1_000_000)

#: Key presses of the simulated callers (language menu, main menu); "" presses nothing.
KEYS = [["1", "1"], ["1", "2"], ["2", "3"], ["1", "0"], ["2", "1"], ["", ""]]


@dataclass
class Results:
    setup: list[float] = field(default_factory=list)  # agi_* block sent -> first command received (s)
    waits: list[float] = field(default_factory=list)  # reply sent -> next command received (s)
    served: int = 0  # the server set a queue and ended the session
    shed: int = 0  # closed before any command: the dialplan's fallback queues the caller
    failed: int = 0  # anything else: refused, reset mid-call, no queue set, out of time
    peak: int = 0  # calls connected at once
    arrivals: int = 0
    arrival_span: float = 0.0  # first to last arrival, as they happened (a lagging client arrives late)
    elapsed: float = 0.0  # first arrival to last call ended

    @property
    def rate(self) -> float:
        """Completed calls per second."""
        return self.served / self.elapsed if self.elapsed else 0.0


class _Call:
    __slots__ = ("sock", "channel", "buffer", "sent_at", "answered")

    def __init__(self, sock: socket.socket, channel: SimulatedChannel):
        self.sock, self.channel = sock, channel
        self.buffer = b""
        self.sent_at = 0.0
        self.answered = 0  # commands received


def run(port: int, *, calls: int, budget: float, rate: float | None = None, lanes: int | None = None,
        think: float = 0.0, host: str = "127.0.0.1") -> Results:
    """Place up to ``calls`` calls at ``rate`` per second (open loop) or ``lanes`` at a time (closed loop)."""
    if (rate is None) == (lanes is None):
        raise ValueError("give either rate (open loop) or lanes (closed loop)")
    results = Results()
    selector = selectors.DefaultSelector()
    timers: list = []  # (when, seq, action, argument), time.monotonic()
    seq = itertools.count()
    started = time.monotonic()
    deadline = started + budget
    to_place = calls
    live: dict[socket.socket, _Call] = {}
    first_arrival = last_arrival = None
    closing = False

    def later(when: float, action, argument=None) -> None:
        heapq.heappush(timers, (when, next(seq), action, argument))

    def arrive(_=None) -> None:
        nonlocal to_place, first_arrival, last_arrival
        if to_place <= 0:
            return
        to_place -= 1
        now = time.monotonic()
        first_arrival = first_arrival if first_arrival is not None else now
        last_arrival = now
        results.arrivals += 1
        caller = Caller(number=f"138{random.randrange(10**8):08d}", keys=list(random.choice(KEYS)),
                        uniqueid=f"{int(time.time())}.{next(_SEQUENCE)}")
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            ended(None, "failed")
            return
        call = live[sock] = _Call(sock, SimulatedChannel(caller, host, port))
        results.peak = max(results.peak, len(live))
        selector.register(sock, selectors.EVENT_WRITE, call)

    def ended(call: _Call | None, outcome: str) -> None:
        if call is not None:
            del live[call.sock]
            selector.unregister(call.sock)
            call.sock.close()
        setattr(results, outcome, getattr(results, outcome) + 1)
        if lanes is not None and not closing:
            arrive()

    def send(call: _Call, lines: list[str]) -> None:
        if call.sock not in live:
            return
        data = "".join(line + "\n" for line in lines).encode()
        call.sent_at = time.time()
        try:
            if call.sock.send(data) != len(data):  # a few hundred bytes into an empty loopback buffer
                raise BlockingIOError
        except OSError:
            ended(call, "failed")

    def connected(call: _Call) -> None:
        if call.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            ended(call, "failed")
            return
        selector.modify(call.sock, selectors.EVENT_READ, call)
        send(call, call.channel.env_lines())

    def readable(call: _Call) -> None:
        try:
            data, ancillary, _flags, _addr = call.sock.recvmsg(65536, _ANCILLARY)
        except BlockingIOError:
            return
        except OSError:
            ended(call, "shed" if not call.answered else "failed")
            return
        arrived = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                arrived = seconds + nanoseconds / 1e9
        if not data:  # the server is done: Asterisk's last HANGUP, then close
            try:
                call.sock.send(b"HANGUP\n")
            except OSError:
                pass
            ended(call, "shed" if not call.answered else
                  "served" if "HOTLINE_QUEUE" in call.channel.variables else "failed")
            return
        call.buffer += data
        while b"\n" in call.buffer:
            raw, call.buffer = call.buffer.split(b"\n", 1)
            (results.waits if call.answered else results.setup).append(arrived - call.sent_at)
            call.answered += 1
            command = raw.decode()
            replies = call.channel.respond(command)
            if think and command.startswith("GET DATA"):
                later(time.monotonic() + think * random.uniform(0.75, 1.25), lambda arg: send(*arg), (call, replies))
            else:
                send(call, replies)

    if rate is not None:
        for i in range(calls):
            later(started + i / rate, arrive)
    else:
        for _ in range(min(lanes, calls)):
            later(started, arrive)

    while (to_place > 0 or live or timers) and time.monotonic() < deadline:
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _when, _n, action, argument = heapq.heappop(timers)
            action(argument)
        timeout = min(0.05, max(0.0, timers[0][0] - time.monotonic())) if timers else 0.05
        for key, _events in selector.select(timeout):
            call = key.data
            if call.sock not in live:  # ended earlier in this round
                continue
            if call.answered == 0 and not call.sent_at:
                connected(call)
            else:
                readable(call)
    closing = True
    for call in list(live.values()):  # out of time
        ended(call, "failed")
    results.failed += to_place if rate is not None and to_place > 0 else 0  # never placed: out of time
    selector.close()
    end = time.monotonic()
    if first_arrival is not None:
        results.arrival_span = last_arrival - first_arrival
        results.elapsed = end - first_arrival
    return results
