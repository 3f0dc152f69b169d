"""Agents: who answers the hotline, from which softphone, in which languages and on which topics, in which
queues with what penalty; and the reasons an agent gives for a pause.

An agent's ``code`` (e.g. "1001") is also its queue MemberName, so queue_log's agent field and the AMI queue
events name agents by code. Its ``interface`` is the softphone's device (``PJSIP/agent1001``): what Asterisk
rings, and how a feature code dialled from that phone finds the agent. The queues are Asterisk's (queues.conf):
a name is checked for its shape only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from base.db import Base
from base.vocabulary import Language

LANGUAGES = tuple(language.value for language in Language)
MAX_PENALTY = 1000
MAX_REASON_LENGTH = 64

_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,19}")
_INTERFACE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}/[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOPIC = re.compile(r"[a-z0-9][a-z0-9_-]{0,29}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AgentError(Exception):
    """Base class of the agents' errors; the message says what to do."""


class InvalidAgent(AgentError, ValueError):
    """An agent cannot be created or changed as asked (a malformed code, interface, language, queue ...)."""


class AgentExists(AgentError):
    """Another agent already has this code or interface."""


class AgentNotFound(AgentError, LookupError):
    """No agent has this code (or interface)."""


class AgentInactive(AgentError):
    """The agent is deactivated: it may log out, nothing else."""


class InvalidPauseReason(AgentError, ValueError):
    """A pause reason that is no known code and no usable text."""


class AgentStoreUnavailable(AgentError):
    """The agents' database failed or cannot be reached."""


# -- tables ------------------------------------------------------------------------------------------


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(100))
    interface: Mapped[str] = mapped_column(String(80), unique=True, index=True)
    languages: Mapped[str] = mapped_column(String(40))  # "zh-CN,en": the first is the agent's own
    topics: Mapped[str] = mapped_column(String(400))  # "traffic,urgent"
    active: Mapped[bool] = mapped_column(Boolean)


class AgentQueue(Base):
    """A queue an agent serves, with its penalty (0 is rung first)."""

    __tablename__ = "agent_queues"
    __table_args__ = (UniqueConstraint("agent_id", "queue", name="uq_agent_queues"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    queue: Mapped[str] = mapped_column(String(64))
    penalty: Mapped[int] = mapped_column(Integer)


# -- views -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedQueue:
    queue: str
    penalty: int = 0


@dataclass(frozen=True)
class AgentView:
    code: str
    name: str
    interface: str
    languages: tuple[str, ...]
    topics: tuple[str, ...]
    active: bool
    queues: tuple[ServedQueue, ...] = ()

    @property
    def language(self) -> str:
        """The agent's own language: its prompts on the phone use it."""
        return self.languages[0]


# -- checks ------------------------------------------------------------------------------------------


def _code(value: object) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise InvalidAgent(f"an agent code is 1 to 20 letters, digits, '-' or '_', got {str(value)[:40]!r}")
    return value


def _interface(value: object) -> str:
    if not isinstance(value, str) or not _INTERFACE.fullmatch(value):
        raise InvalidAgent(f"an interface is TECH/resource, e.g. PJSIP/agent1001, got {str(value)[:90]!r}")
    return value


def _name(value: object) -> str:
    text = _CONTROL.sub("", value).strip() if isinstance(value, str) else ""
    if not text or len(text) > 100:
        raise InvalidAgent("an agent's name is 1 to 100 characters of text")
    return text


def _languages(values: Iterable[str]) -> str:
    values = [values] if isinstance(values, str) else list(values)
    if not values or any(v not in LANGUAGES for v in values) or len(set(values)) != len(values):
        raise InvalidAgent(f"languages must be one or more of {', '.join(LANGUAGES)} without repeats, "
                           f"the agent's own first; got {values!r}"[:200])
    return ",".join(values)


def _topics(values: Iterable[str]) -> str:
    values = [values] if isinstance(values, str) else list(values)
    for value in values:
        if not isinstance(value, str) or not _TOPIC.fullmatch(value):
            raise InvalidAgent(f"a topic is 1 to 30 lowercase letters, digits, '-' or '_', got {str(value)[:40]!r}")
    text = ",".join(dict.fromkeys(values))
    if len(text) > 400:
        raise InvalidAgent("too many topics")
    return text


def valid_queue_name(name: object) -> bool:
    """Whether ``name`` has the shape of an Asterisk queue name (no comma, bar or space to break an action)."""
    return isinstance(name, str) and _QUEUE.fullmatch(name) is not None


def _queues(queues: Mapping[str, int] | Iterable[ServedQueue | tuple[str, int] | str]) -> list[ServedQueue]:
    items = queues.items() if isinstance(queues, Mapping) else queues
    served: dict[str, ServedQueue] = {}
    for item in items:
        if isinstance(item, ServedQueue):
            name, penalty = item.queue, item.penalty
        elif isinstance(item, str):
            name, penalty = item, 0
        else:
            name, penalty = item
        if not valid_queue_name(name):
            raise InvalidAgent(f"a queue name is 1 to 64 letters, digits, '.', '-' or '_', got {str(name)[:70]!r}")
        if isinstance(penalty, bool) or not isinstance(penalty, int) or not 0 <= penalty <= MAX_PENALTY:
            raise InvalidAgent(f"the penalty in queue {name} must be a whole number from 0 to {MAX_PENALTY}")
        if name in served:
            raise InvalidAgent(f"queue {name} is given twice")
        served[name] = ServedQueue(name, penalty)
    return list(served.values())


@contextlib.contextmanager
def _database(action: str) -> Iterator[None]:
    try:
        yield
    except sa_exc.IntegrityError:  # a writer beside us took the code or interface first
        raise AgentExists(f"{action} clashed with another agent's code or phone") from None
    except sa_exc.SQLAlchemyError as exc:
        # The driver's own message may quote parameters: its type says enough.
        raise AgentStoreUnavailable(f"the agents' database failed while {action} "
                                    f"({type(getattr(exc, 'orig', None) or exc).__name__})") from None


# -- the store ---------------------------------------------------------------------------------------


class AgentStore:
    """Agents and the queues they serve, over a SQLAlchemy session factory. Database failures raise
    AgentStoreUnavailable."""

    def __init__(self, session_factory: sessionmaker) -> None:
        self._session_factory = session_factory

    def add(self, code: str, name: str, interface: str, *, languages: Iterable[str] = ("zh-CN",),
            topics: Iterable[str] = (), queues: Mapping[str, int] | Iterable = (), active: bool = True) -> AgentView:
        code, interface = _code(code), _interface(interface)
        row = Agent(code=code, name=_name(name), interface=interface, languages=_languages(languages),
                    topics=_topics(topics), active=bool(active))
        served = _queues(queues)
        with _database(f"adding agent {code}"), self._session_factory.begin() as session:
            self._free(session, code=code, interface=interface)
            session.add(row)
            session.flush()
            session.add_all(AgentQueue(agent_id=row.id, queue=q.queue, penalty=q.penalty) for q in served)
        return self.get(code)

    def update(self, code: str, *, name: str | None = None, interface: str | None = None,
               languages: Iterable[str] | None = None, topics: Iterable[str] | None = None,
               active: bool | None = None) -> AgentView:
        """Change what is given (None: unchanged)."""
        with _database(f"changing agent {code}"), self._session_factory.begin() as session:
            row = self._require(session, Agent.code == code, code)
            if name is not None:
                row.name = _name(name)
            if interface is not None and interface != row.interface:
                self._free(session, interface=_interface(interface))
                row.interface = interface
            if languages is not None:
                row.languages = _languages(languages)
            if topics is not None:
                row.topics = _topics(topics)
            if active is not None:
                row.active = bool(active)
        return self.get(code)

    def set_queues(self, code: str, queues: Mapping[str, int] | Iterable) -> AgentView:
        """Replace the queues the agent serves (they take effect at its next login)."""
        served = _queues(queues)
        with _database(f"changing the queues of agent {code}"), self._session_factory.begin() as session:
            row = self._require(session, Agent.code == code, code)
            session.execute(delete(AgentQueue).where(AgentQueue.agent_id == row.id))
            session.add_all(AgentQueue(agent_id=row.id, queue=q.queue, penalty=q.penalty) for q in served)
        return self.get(code)

    def get(self, code: str) -> AgentView:
        with _database(f"reading agent {code}"), self._session_factory() as session:
            return self._view(session, self._require(session, Agent.code == code, code))

    def by_interface(self, interface: str) -> AgentView:
        """The agent whose softphone this is; AgentNotFound for a phone no agent has."""
        with _database("finding an agent by its phone"), self._session_factory() as session:
            return self._view(session, self._require(session, Agent.interface == interface, interface))

    def list(self, include_inactive: bool = True) -> list[AgentView]:
        with _database("listing agents"), self._session_factory() as session:
            query = select(Agent).order_by(Agent.code)
            if not include_inactive:
                query = query.where(Agent.active.is_(True))
            return [self._view(session, row) for row in session.scalars(query)]

    def remove(self, code: str) -> None:
        with _database(f"removing agent {code}"), self._session_factory.begin() as session:
            row = self._require(session, Agent.code == code, code)
            session.execute(delete(AgentQueue).where(AgentQueue.agent_id == row.id))
            session.delete(row)

    @staticmethod
    def _free(session: Session, *, code: str | None = None, interface: str | None = None) -> None:
        # Checked here for a clear message; the unique indexes still decide between two racing writers.
        if code is not None and session.scalar(select(Agent.id).where(Agent.code == code)) is not None:
            raise AgentExists(f"agent {code} exists already")
        if interface is not None:
            owner = session.scalar(select(Agent.code).where(Agent.interface == interface))
            if owner is not None:
                raise AgentExists(f"{interface} is the phone of agent {owner} already")

    @staticmethod
    def _require(session: Session, where, what: str) -> Agent:
        row = session.scalars(select(Agent).where(where)).one_or_none()
        if row is None:
            raise AgentNotFound(f"no agent {what[:90]}")
        return row

    @staticmethod
    def _view(session: Session, row: Agent) -> AgentView:
        queues = session.execute(select(AgentQueue.queue, AgentQueue.penalty).where(AgentQueue.agent_id == row.id)
                                 .order_by(AgentQueue.penalty, AgentQueue.queue))
        return AgentView(row.code, row.name, row.interface, tuple(row.languages.split(",")),
                         tuple(t for t in row.topics.split(",") if t), row.active,
                         tuple(ServedQueue(q, p) for q, p in queues))


# -- pause reasons -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PauseReason:
    """A reason for a pause: ``digit`` is keyed on the phone after *73, ``key`` is what Asterisk records
    (QueuePause's Reason, queue_log's PAUSE line)."""

    digit: str
    key: str
    zh_CN: str
    en: str

    def label(self, language: str) -> str:
        return self.zh_CN if language == Language.zh_CN.value else self.en


PAUSE_REASONS = (
    PauseReason("1", "break", "小休", "Break"),
    PauseReason("2", "lunch", "用餐", "Lunch"),
    PauseReason("3", "training", "培训", "Training"),
    PauseReason("4", "meeting", "会议", "Meeting"),
    PauseReason("5", "after-call-work", "话后处理", "After-call work"),
)
#: Asterisk's own reason when it pauses an agent who let a call ring out (queues.conf autopause).
AUTO_PAUSE = PauseReason("", "Auto-Pause", "未接来电，自动示忙", "Missed a call, paused automatically")
_BY_DIGIT = {r.digit: r for r in PAUSE_REASONS}
_BY_KEY = {r.key: r for r in (*PAUSE_REASONS, AUTO_PAUSE)}


def pause_reason_by_digit(digit: str) -> PauseReason:
    """The reason keyed on the phone (*73X)."""
    try:
        return _BY_DIGIT[digit]
    except (KeyError, TypeError):
        raise InvalidPauseReason(f"pause reason codes are {', '.join(_BY_DIGIT)}, got {str(digit)[:10]!r}") from None


def known_pause_reason(text: str) -> PauseReason | None:
    """The listed reason ``text`` names (as Asterisk reports it), None for free text."""
    return _BY_KEY.get(text)


def pause_reason_text(reason: str) -> str:
    """What Asterisk is given for a pause asked from the web or API: a listed key as it is, or free text
    cleaned (no control characters, no '|' which separates queue_log's fields) and bounded."""
    if not isinstance(reason, str):
        raise InvalidPauseReason("a pause reason is text")
    if reason in _BY_KEY:
        return reason
    text = " ".join(_CONTROL.sub(" ", reason).replace("|", "/").split())
    if not text:
        raise InvalidPauseReason("give a reason for the pause")
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidPauseReason(f"a pause reason is at most {MAX_REASON_LENGTH} characters")
    return text
