"""A scripted Asterisk manager (AMI) on a real TCP socket, for the AMI link's tests.

It speaks like Asterisk 20: the banner ``Asterisk Call Manager/9.0.0``, ``\\r\\n`` lines, a blank line after
each message; a refused Login gets ``Response: Error`` and the connection closed; ``Events: off`` at Login
keeps pushed events away from that session. Everything else comes from the test: ``peer.script[name]`` is
a callable ``(session, action) -> None`` that answers with ``session.send(...)`` as it likes (late, out of
order, interleaved with events, or by dropping the connection halfway through an event list).

``fixture_messages(name)`` gives the received (``<<< ``) messages of a recorded transcript as AMI text.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

CRLF = "\r\n"
BANNER = "Asterisk Call Manager/9.0.0"
_HERE = Path(__file__).resolve().parent
FIXTURE_DIRS = [_HERE / "fixtures" / "asterisk"]

Headers = Mapping[str, object] | Iterable[tuple[str, object]]


def message(headers: Headers) -> str:
    """One AMI message: ``Key: value`` lines in the given order (a list value repeats the header)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = []
    for key, value in pairs:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(f"{key}: {item}")
    return CRLF.join(lines) + CRLF + CRLF


def response(action: "Action", text: str = "", status: str = "Success", *extra: tuple[str, object]) -> str:
    head = [("Response", status), ("ActionID", action.action_id)]
    return message(head + ([("Message", text)] if text else []) + list(extra))


def event(name: str, *pairs: tuple[str, object], **headers: object) -> str:
    return message([("Event", name), *pairs, *headers.items()])


def fixture_path(name: str) -> Path:
    for folder in FIXTURE_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"AMI fixture {name} not found in {', '.join(map(str, FIXTURE_DIRS))}")


def fixture_messages(name: str) -> list[str]:
    """The messages Asterisk sent in a recorded transcript, each as ``\\r\\n`` AMI text (banner left out).

    Two layouts: ``<<< ``/``>>> `` prefixed lines, or bare received messages (``ami-queue-call-pjsip.txt``)."""
    raw = fixture_path(name).read_text(encoding="utf-8").splitlines()
    prefixed = any(line.startswith("<<< ") for line in raw)
    blocks, current = [], []
    for line in raw:
        if line.startswith("#"):
            continue
        if prefixed:
            if not (line.startswith("<<< ") or line == "<<<"):
                continue
            line = line[4:]
        if line.startswith("Asterisk Call Manager/"):
            continue
        if line == "":
            if current:
                blocks.append(CRLF.join(current) + CRLF + CRLF)
                current = []
        else:
            current.append(line)
    if current:
        blocks.append(CRLF.join(current) + CRLF + CRLF)
    return blocks


class Action:
    """An action as the peer read it: its header lines in order."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.pairs:
            if k.lower() == key.lower():
                return v
        return default

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k.lower() == key.lower()]

    @property
    def name(self) -> str:
        return self.get("Action")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def __repr__(self) -> str:
        return f"<Action {self.name} {self.action_id}>"


class Session:
    """One connection from the link."""

    def __init__(self, peer: "AmiPeer", sock: socket.socket):
        self.peer = peer
        self.sock = sock
        self.logged_in = False
        self.events = True
        self._lock = threading.Lock()
        self.closed = False

    def send(self, *texts: str | bytes) -> None:
        with self._lock:
            for text in texts:
                try:
                    self.sock.sendall(text if isinstance(text, bytes) else text.encode("utf-8"))
                except OSError:
                    self.closed = True
                    return

    def close(self) -> None:
        with self._lock:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def serve(self) -> None:
        self.send(BANNER + CRLF)
        buffer = b""
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                buffer += data.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    pairs = []
                    for line in block.decode("utf-8", "replace").split("\n"):
                        key, _, value = line.partition(":")
                        pairs.append((key.strip(), value[1:] if value.startswith(" ") else value))
                    self.peer._received(self, Action(pairs))
        except OSError:
            pass
        finally:
            self.closed = True
            self.sock.close()


class AmiPeer:
    """A threaded AMI server on 127.0.0.1 (port 0): ``with AmiPeer(secret=...) as peer: ... peer.port``."""

    def __init__(self, username: str = "hotline", secret: str = "labsecret"):
        self.username = username
        self.secret = secret
        self.script: dict[str, Callable[[Session, Action], None]] = {
            "Ping": lambda s, a: s.send(response(a, "", "Success", ("Ping", "Pong"))),
        }
        self.actions: list[Action] = []  # every action received, Login included, in order
        self.login_events: list[str] = []  # the Events header of each Login
        self.logins = 0
        self.refused_logins = 0
        self.connections = 0
        self.sessions: list[Session] = []
        self._cond = threading.Condition()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="ami-peer", daemon=True)
        self._stopped = False

    def __enter__(self) -> "AmiPeer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        self._sock.close()
        self.drop()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            session = Session(self, sock)
            with self._cond:
                self.connections += 1
                self.sessions.append(session)
                self._cond.notify_all()
            threading.Thread(target=session.serve, name="ami-peer-session", daemon=True).start()

    def _received(self, session: Session, action: Action) -> None:
        with self._cond:
            self.actions.append(action)
            self._cond.notify_all()
        if action.name.lower() == "login":
            self._login(session, action)
        elif not session.logged_in:
            session.send(response(action, "Permission denied", "Error"))
        elif action.name in self.script:
            self.script[action.name](session, action)
        elif action.name.lower() == "logoff":
            session.send(response(action, "Thanks for all the fish.", "Goodbye"))
            session.close()
        else:
            session.send(response(action, "Invalid/unknown command", "Error"))

    def _login(self, session: Session, action: Action) -> None:
        ok = action.get("Username") == self.username and action.get("Secret") == self.secret
        with self._cond:
            self.login_events.append(action.get("Events"))
            if ok:
                self.logins += 1
            else:
                self.refused_logins += 1
            self._cond.notify_all()
        if not ok:  # Asterisk answers, then hangs up on a failed login
            session.send(response(action, "Authentication failed", "Error"))
            session.close()
            return
        session.logged_in = True
        session.events = action.get("Events", "on").lower() not in ("off", "no", "false")
        session.send(response(action, "Authentication accepted"),
                     event("FullyBooted", ("Privilege", "system,all"), ("Status", "Fully Booted")))

    # -- what a test does ---------------------------------------------------------------------------------

    def live(self) -> list[Session]:
        with self._cond:
            return [s for s in self.sessions if s.logged_in and not s.closed]

    def push(self, *texts: str | bytes, raw: bool = False) -> None:
        """Send events (or any text when ``raw``) to every logged-in session that takes events."""
        for session in self.live():
            if raw or session.events:
                session.send(*texts)

    def replay(self, name: str) -> int:
        """Push every received message of a fixture transcript; returns how many."""
        texts = fixture_messages(name)
        self.push(*texts, raw=True)
        return len(texts)

    def drop(self) -> None:
        """Close every connection, as a crashing or restarting Asterisk would."""
        with self._cond:
            sessions = list(self.sessions)
        for session in sessions:
            session.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def received(self, name: str) -> list[Action]:
        with self._cond:
            return [a for a in self.actions if a.name == name]
