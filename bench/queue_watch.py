"""Benchmark: AMI events per second through the whole queue watch, end to end.

A scripted Asterisk on a free loopback port logs the watch in, answers its QueueStatus, then sends
``--calls`` queue calls as AMI text, as fast as the socket takes them (each answered call is
QueueCallerJoin, AgentCalled, AgentConnect, AgentComplete plus the QueueMemberStatus churn Asterisk sends;
every ``--abandon-every``-th caller abandons instead). The real ``hotline.ami.QueueWatch`` reads them
through the AMI link (panoramisk, our parser), translates them, and applies them in batches to the live
statistics and the agents' presence in a throwaway redis-server, and records the abandons in a SQLite
database. Measured: from the first event sent until the statistics count every call, events/s; in the
same run, the statistics alone (``apply_many`` of the same domain events, no AMI, no presence) as the
part of that path the statistics bench (bench/queue_stats.py) measures. Goal: 5,000 AMI events/s.

    .venv/bin/python bench/queue_watch.py [--calls 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ami.link import parse_message  # noqa: E402
from ami.translate import EventTranslator  # noqa: E402
from bench.queue_stats import throwaway_redis  # noqa: E402
from config import load_settings  # noqa: E402
from hotline.ami import QueueWatch  # noqa: E402
from hotline.migrate import upgrade  # noqa: E402
from hotline.services import build_services  # noqa: E402
from queues.statistics import QueueStatistics  # noqa: E402

CRLF = "\r\n"
QUEUE = "hotline-zh"


def block(**headers) -> str:
    return "".join(f"{k}: {v}{CRLF}" for k, v in headers.items()) + CRLF


def member_status(status: int, in_call: int) -> str:
    return block(Event="QueueMemberStatus", Privilege="agent,all", Queue=QUEUE, MemberName="1001",
                 Interface="PJSIP/agent1001", StateInterface="PJSIP/agent1001", Membership="dynamic", Penalty=0,
                 CallsTaken=0, LastCall=0, LastPause=0, LoginTime=0, InCall=in_call, Status=status, Paused=0,
                 PausedReason="", Ringinuse=0, Wrapuptime=0)


def call_events(n: int, abandon: bool) -> list[str]:
    """One call as Asterisk 20 sends it (the headers app_queue's events carry, channel vars included)."""
    uid = f"1795900000.{n}"
    caller = dict(Privilege="agent,all", Channel=f"PJSIP/carrier-{n:08x}", ChannelState=6, ChannelStateDesc="Up",
                  CallerIDNum=f"138{n:08d}", CallerIDName="Citizen", ConnectedLineNum="<unknown>",
                  ConnectedLineName="<unknown>", Language="zh", AccountCode="", Context="hotline-call",
                  Exten="12345", Priority=20, Uniqueid=uid, Linkedid=uid,
                  ChanVariable=f"HOTLINE_TICKET=20261128{n:05d}")
    out = [block(Event="QueueCallerJoin", **caller, Queue=QUEUE, Position=1, Count=1)]
    if abandon:
        out.append(block(Event="QueueCallerAbandon", **caller, Queue=QUEUE, Position=1, OriginalPosition=1,
                         HoldTime=12))
        out.append(block(Event="QueueCallerLeave", **caller, Queue=QUEUE, Count=0, Position=1))
        return out
    dest = dict(DestChannel=f"PJSIP/agent1001-{n:08x}", DestChannelState=6, DestChannelStateDesc="Up",
                DestCallerIDNum="1001", DestUniqueid=f"1795900000.{n}9", DestChanVariable="HOTLINE_TICKET=")
    member = dict(Queue=QUEUE, Interface="PJSIP/agent1001", MemberName="1001")
    out += [block(Event="AgentCalled", **caller, **dest, **member),
            member_status(6, 0),
            block(Event="QueueCallerLeave", **caller, Queue=QUEUE, Count=0, Position=1),
            block(Event="AgentConnect", **caller, **dest, **member, HoldTime=3, RingTime=2),
            member_status(2, 1),
            block(Event="AgentComplete", **caller, **dest, **member, HoldTime=3, TalkTime=60, Reason="caller"),
            member_status(1, 0)]
    return out


class ScriptedAsterisk:
    """Logs one session in, answers QueueStatus with one member, then sends ``payload`` when told to."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.go = threading.Event()
        self.sent_at = 0.0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.sendall(b"Asterisk Call Manager/9.0.0\r\n")
        buffer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                raw, buffer = buffer.split(b"\r\n\r\n", 1)
                action = dict(line.split(": ", 1) for line in raw.decode().split(CRLF) if ": " in line)
                name, aid = action.get("Action"), action.get("ActionID", "")
                if name == "Login":
                    conn.sendall(block(Response="Success", ActionID=aid, Message="Authentication accepted").encode())
                elif name == "QueueStatus":
                    conn.sendall((block(Response="Success", ActionID=aid, EventList="start",
                                        Message="Queue status will follow")
                                  + block(Event="QueueMember", Queue=QUEUE, Name="1001", Location="PJSIP/agent1001",
                                          StateInterface="PJSIP/agent1001", Membership="dynamic", Penalty=0,
                                          CallsTaken=0, LastCall=0, InCall=0, Status=1, Paused=0,
                                          PausedReason="", ActionID=aid)
                                  + block(Event="QueueStatusComplete", EventList="Complete", ListItems=1,
                                          ActionID=aid)).encode())
                    threading.Thread(target=self._send, args=(conn,), daemon=True).start()
                else:
                    conn.sendall(block(Response="Success", ActionID=aid).encode())

    def _send(self, conn) -> None:
        self.go.wait()
        self.sent_at = time.perf_counter()
        conn.sendall(self.payload)


def one_round(calls: int, abandon_every: int, redis_url: str, workdir: Path) -> tuple[float, int, float]:
    """(AMI events/s end to end, events sent, statistics-alone events/s)."""
    texts = [t for n in range(calls) for t in call_events(n, abandon_every and n % abandon_every == 0)]
    asterisk = ScriptedAsterisk("".join(texts).encode())
    data = workdir / uuid.uuid4().hex
    settings = load_settings(environ={}, data_dir=data, redis_url=redis_url, ami_secret="bench",
                             ami_port=asterisk.port)
    upgrade(settings.database_url)
    services = build_services(settings)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    services.queue_statistics = QueueStatistics.from_settings(services.redis, settings, prefix=prefix)
    watch = QueueWatch(services)
    watch.start(call_back_seconds=3600, redis_check_seconds=3600)
    try:
        if not watch.link.wait_connected(20):
            raise SystemExit("the queue watch did not log in")
        deadline = time.monotonic() + 20
        while services.presence.state("1001").state.value != "available":  # the resync is applied
            if time.monotonic() > deadline:
                raise SystemExit("the resync was not applied")
            time.sleep(0.01)
        asterisk.go.set()
        deadline = time.monotonic() + 300
        while services.queue_statistics.figures(QUEUE).offered < calls:
            if time.monotonic() > deadline:
                raise SystemExit("the statistics did not count every call within 300 s")
            time.sleep(0.005)
        end_to_end = len(texts) / (time.perf_counter() - asterisk.sent_at)
    finally:
        watch.close()
    # The statistics alone, same domain events, same Redis.
    translator = EventTranslator()
    events = [e for t in texts for e in translator.translate(parse_message(t))]
    alone = QueueStatistics.from_settings(services.redis, settings, prefix=prefix + "alone:")
    started = time.perf_counter()
    alone.apply_many(events, batch=200)
    stats_alone = len(texts) / (time.perf_counter() - started)
    for key in services.redis.scan_iter(prefix + "*"):
        services.redis.delete(key)
    services.close()
    return end_to_end, len(texts), stats_alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--abandon-every", type=int, default=10, help="every N-th caller abandons (0: none)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not 1 <= args.calls <= 100_000 or not 1 <= args.rounds <= 20:
        raise SystemExit("--calls from 1 to 100,000 and --rounds from 1 to 20")
    workdir = Path(tempfile.mkdtemp(prefix="bench-queue-watch-"))
    proc, url = throwaway_redis(str(workdir))
    try:
        results = [one_round(args.calls, args.abandon_every, url, workdir) for _ in range(args.rounds)]
    finally:
        proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    whole = [r[0] for r in results]
    alone = [r[2] for r in results]
    print(f"AMI events through the queue watch ({results[0][1]:,} events, {args.calls:,} calls, "
          f"{args.rounds} rounds; the AMI link, translation, statistics and presence in Redis):")
    print(f"  end to end: median {statistics.median(whole):,.0f} events/s "
          f"(min {min(whole):,.0f}, max {max(whole):,.0f}); goal 5,000/s")
    print(f"  the statistics alone (apply_many of the same events, batches of 200): median "
          f"{statistics.median(alone):,.0f} events/s; the whole path runs at "
          f"{statistics.median(whole) / statistics.median(alone):.2f} of it")


if __name__ == "__main__":
    main()
