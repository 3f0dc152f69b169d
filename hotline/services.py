"""The long-lived objects one process needs, built once from the settings and passed to the drivers."""

from __future__ import annotations

import functools
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from rq import Queue
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from base import metrics
from base.db import make_engine, make_session_factory
from config import Settings
from hotline.redis_conn import connect_redis
from jobs.tickets import make_enqueue
from orders.cases import Casework
from orders.departments import DepartmentStore
from orders.repeat_callers import RepeatCallers
from orders.store import TicketStore
from orders.ticket_numbers import TicketNumberAllocator
from orders.working_days import WorkingCalendar
from orders.writer import TicketWriter, spool_path_for
from queues.agents import AgentStore
from queues.callbacks import CallBackList
from queues.control import NoQueueControl, QueueControl, QueueControlUnavailable
from queues.desk import AgentDesk
from queues.presence import AgentPresence
from queues.statistics import QueueStatistics
from virtual_numbers.broker import Broker

REDIS_PREFIX = "hotline:"  # every Redis key of the hotline starts with it

_WRITES = metrics.counter("hotline_ticket_writes_total", "Ticket saves by how they were kept "
                          "(saved, spooled, deferred to RQ, lost)", ["how"])


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker
    _redis: object | None = field(default=None, repr=False)
    _closing: list = field(default_factory=list, repr=False)  # what close() must also stop (AMI sessions)

    @property
    def redis(self):
        """The Redis client, connected on first use (so a process that never needs it never starts it)."""
        if self._redis is None:
            self._redis = connect_redis(self.settings)
        return self._redis

    @functools.cached_property
    def tickets(self) -> TicketStore:
        """The ticket store over this process's database."""
        return TicketStore(self.session_factory)

    @functools.cached_property
    def repeat_callers(self) -> RepeatCallers:
        """Whether a caller called in the last repeat_caller_hours, answered for many calls at a time."""
        return RepeatCallers(self.tickets, timedelta(hours=self.settings.repeat_caller_hours))

    @functools.cached_property
    def casework(self) -> Casework:
        """The moves people make on tickets, with their deadlines on the official working-day calendar."""
        s = self.settings
        calendar = WorkingCalendar(s.holiday_file if str(s.holiday_file) not in ("", ".") else None)
        return Casework(self.session_factory, calendar, urgent_accept=timedelta(minutes=s.urgent_accept_minutes),
                        warn_share=s.deadline_warn_share)

    @functools.cached_property
    def departments(self) -> DepartmentStore:
        """Departments, their call-back numbers and the dispatch catalogue."""
        return DepartmentStore(self.session_factory, region=self.settings.region)

    @functools.cached_property
    def broker(self) -> Broker:
        """The virtual-number broker: bindings in the database, their lookups in Redis."""
        s = self.settings
        return Broker(self.session_factory, self.redis, region=s.region, local_area_code=s.local_area_code or None,
                      default_days_after_close=s.virtual_days_after_close, extension_mode=s.virtual_extension_mode,
                      cache_secret=s.virtual_numbers_secret or _kept_secret(s.data_dir / "virtual-numbers-secret"),
                      receipt_spool=Path(s.data_dir) / "spool" / "virtual-receipts.jsonl")

    @functools.cached_property
    def writer(self) -> TicketWriter:
        """The TicketWriter of this process: its store, the spool under its data dir, the RQ queue as the
        last resort (connected only if the disk ever refuses the spool). Start its replayer with
        ``start_replaying()`` in a process that writes tickets; ``close()`` drains it."""
        s = self.settings

        def enqueue(data):
            return make_enqueue(Queue(s.rq_queue, connection=self.redis))(data)

        return TicketWriter(self.tickets, enqueue, spool_path_for(s.data_dir), threads=s.ticket_io_threads,
                            linger=s.ticket_save_linger, db_pause=s.ticket_db_pause,
                            on_outcome=lambda how: _WRITES.labels(how).inc())

    @functools.cached_property
    def ticket_numbers(self) -> TicketNumberAllocator:
        """The ticket number allocator: Redis, then the database, then the local counter under the data
        dir; its floor counts the spool's numbers."""
        s = self.settings
        return TicketNumberAllocator(self.redis, self.session_factory, spool=self.writer.spool,
                                     local_dir=s.data_dir / "ticket-numbers", node_id=s.node_id,
                                     redis_pause=s.ticket_redis_pause, block=s.ticket_number_block)

    @functools.cached_property
    def agents(self) -> AgentStore:
        """Agents: their phones, skills and the queues they serve."""
        return AgentStore(self.session_factory)

    @functools.cached_property
    def presence(self) -> AgentPresence:
        """Each agent's live state, as Asterisk's events tell it (kept in Redis)."""
        return AgentPresence(self.redis, prefix=REDIS_PREFIX, wrap_up_seconds=self.settings.wrap_up_seconds)

    @functools.cached_property
    def queue_statistics(self) -> QueueStatistics:
        """The live queue figures (kept in Redis, fed by the queue watch)."""
        return QueueStatistics.from_settings(self.redis, self.settings, prefix=REDIS_PREFIX)

    @functools.cached_property
    def queue_control(self) -> QueueControl:
        """Asterisk's queues and dialler over an AMI session of this process (events off), opened at the
        first request, not when the process starts: a FastAGI or web process must start and serve calls
        whatever the AMI link does. Without ``ami_secret``, a stand-in that says no AMI link is configured."""
        if not self.settings.ami_secret:
            return NoQueueControl()
        return _ControlOnFirstUse(self._open_queue_control)

    def _open_queue_control(self) -> QueueControl:
        s = self.settings
        from ami.control import AmiQueueControl  # here: only a process that drives Asterisk opens a session
        from ami.link import AmiLink

        link = AmiLink(s.ami_host, s.ami_port, s.ami_username, s.ami_secret, events=False,
                       action_timeout=s.ami_action_timeout, reconnect_max=s.ami_reconnect_max_seconds)
        link.start()
        self._closing.append(link.close)
        link.wait_connected(s.ami_action_timeout)  # the first request then usually finds it logged in
        return AmiQueueControl(link)

    @functools.cached_property
    def desk(self) -> AgentDesk:
        """Agents' login, logout and pause, asked of Asterisk and confirmed by its events."""
        return AgentDesk(self.agents, self.presence, self.queue_control)

    @functools.cached_property
    def call_backs(self) -> CallBackList:
        """Missed calls to be called back by a free agent."""
        s = self.settings
        return CallBackList(self.session_factory, within=timedelta(minutes=s.callback_within_minutes),
                            attempts=s.callback_attempts, region=s.region, local_area_code=s.local_area_code or None)

    def start_replaying(self) -> None:
        """Replay this process's ticket spool every few seconds (the spool's owner wherever tickets are
        written)."""
        self.writer.start_replaying(self.settings.ticket_spool_replay_seconds)

    def close(self) -> None:
        """Spool what the writer still holds in memory, then close the connections."""
        writer = self.__dict__.get("writer")
        if writer is not None:
            writer.close()
        broker = self.__dict__.get("broker")
        if broker is not None:
            broker.close()  # the receipts it still holds in memory: written, or spooled
        for close in reversed(self._closing):
            close()
        repeat_callers = self.__dict__.get("repeat_callers")
        if repeat_callers is not None:
            repeat_callers.close()
        tickets = self.__dict__.get("tickets")
        if tickets is not None:
            tickets.close()
        self.engine.dispose()
        if self._redis is not None:
            self._redis.connection_pool.disconnect()


def _kept_secret(path: Path) -> bytes:
    """A random secret kept in ``path`` (made on first use, mode 0600): the same for every process of a host."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        return secret


def build_services(settings: Settings, redis=None) -> Services:
    engine = make_engine(settings.database_url, connect_timeout=settings.database_connect_timeout,
                         statement_timeout=settings.database_statement_timeout or None,
                         pool_timeout=settings.database_pool_timeout)
    return Services(settings=settings, engine=engine, session_factory=make_session_factory(engine), _redis=redis)


class _ControlOnFirstUse:
    """A QueueControl that opens its AMI session at the first request; a failure to open it is
    QueueControlUnavailable for that request (the next one tries again), never an error at start-up."""

    def __init__(self, open_control) -> None:
        self._open = open_control
        self._control: QueueControl | None = None
        self._lock = threading.Lock()

    def _get(self) -> QueueControl:
        with self._lock:
            if self._control is None:
                try:
                    self._control = self._open()
                except Exception as exc:  # noqa: BLE001 - whatever broke, the caller gets a clear "unavailable"
                    raise QueueControlUnavailable(f"the AMI link could not be opened: {exc}") from None
            return self._control

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._get(), name)
