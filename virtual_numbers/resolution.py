"""Resolving a call to a virtual number by the pair (caller, dialled X [, extension]), and its receipt.

Never by X alone: the caller must be a party of a live binding on X. The citizen reaches the department
side (B, else the department phone that last called, else the department's line); a department phone
(B, or one of the group G) reaches the citizen. The number presented to the callee is always X.

Without an extension the caller's party rows on X decide; a department with no pair binding on X but
extension bindings there is connected when it has exactly one, asked for the extension when it has more.
A caller who is a party of two bindings on X (a phone two departments share) is refused, not guessed.

Every resolution is recorded once per call id (resolution_records, masked numbers only); a later
resolution of the same call replaces only an ``extension_required`` record (the caller keyed the
extension). If the record cannot be written the answer still stands and the failure is logged.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from base import metrics
from orders.caller import mask
from orders.errors import StorageError
from orders.models import Department, DepartmentPhone
from orders.store import database_errors
from virtual_numbers.lifecycle import Lifecycle, end_bindings
from virtual_numbers.lookups import cache_data, department_phones
from virtual_numbers.cache import BindingCache
from virtual_numbers.errors import InvalidRequest, ReceiptNotFound
from virtual_numbers.models import Binding, BindingExtension, BindingParty, ResolutionRecord, VirtualNumber
from virtual_numbers.parties import caller_e164, department_party, pool_e164
from virtual_numbers.views import (AMBIGUOUS, CALL_RECORDED, CONNECTED, DIRECTION_NOT_ALLOWED, ENTER_EXTENSION,
                                   EXPIRED, EXTENSION, EXTENSION_REQUIRED, HANGUP_BY, NO_DEPARTMENT_PHONE,
                                   NOT_IN_SERVICE, NUMBER_RESERVED, REMOVED, RESERVED, TO_CITIZEN, TO_DEPARTMENT,
                                   UNKNOWN_CALLER, UNKNOWN_EXTENSION, UNKNOWN_NUMBER, UNKNOWN_PAIR, Receipt,
                                   Resolution)

log = logging.getLogger(__name__)

_RESOLUTIONS = metrics.counter("hotline_virtual_resolutions_total",
                               "Calls to virtual numbers resolved, by outcome and where the answer came from",
                               ["outcome", "source"])
_SECONDS = metrics.histogram("hotline_virtual_resolution_seconds", "Time to resolve a call to a virtual number",
                             ["source"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0))
_NOT_AUDITED = metrics.counter("hotline_virtual_audit_failures_total", "Resolutions whose record could not be written")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,8}")
CALL_ID_MAX = 64
CITIZEN, DEPARTMENT = "citizen", "department"  # the caller's side of a binding


class Resolver:
    def __init__(self, session_factory: sessionmaker, cache: BindingCache, lifecycle: Lifecycle, *, region: str,
                 local_area_code: str | None, clock: Callable[[], datetime], renew_period: timedelta) -> None:
        self._session_factory = session_factory
        self._cache = cache
        self._lifecycle = lifecycle
        self._region = region
        self._local_area_code = local_area_code
        self._clock = clock
        self.renew_period = renew_period
        # Renewal writes only when it gains this much: a busy binding is not rewritten on every call.
        self._renew_step = max(timedelta(minutes=1), renew_period / 100)

    def resolve(self, caller: str | None, dialled: str, extension: str | None = None,
                call_id: str | None = None) -> Resolution:
        started = time.perf_counter()
        now = self._clock()
        call_id = _call_id(call_id)
        x = pool_e164(dialled, self._region)
        c = caller_e164(caller, self._region, self._local_area_code)
        extension = None if extension in (None, "") else str(extension)
        source = "none"
        if x is None:
            answer = _refused(call_id, UNKNOWN_NUMBER)
        elif c is None:
            answer = _refused(call_id, UNKNOWN_CALLER, x)
        elif extension is not None and not _DIGITS.fullmatch(extension):
            answer = _refused(call_id, UNKNOWN_EXTENSION, x)
        else:
            answer, source = self._from_cache(call_id, x, c, extension, now), "cache"
            if answer is None:
                answer, source = self._from_database(call_id, x, c, extension, now), "database"
        self._audit(answer, x or mask(dialled if isinstance(dialled, str) else ""),
                    mask(c or (caller if isinstance(caller, str) else "")), now)
        _RESOLUTIONS.labels(answer.reason or CONNECTED, source).inc()
        _SECONDS.labels(source).observe(time.perf_counter() - started)
        return answer

    # -- the fast path -----------------------------------------------------------------------------

    def _from_cache(self, call_id: str, x: str, c: str, extension: str | None, now: datetime) -> Resolution | None:
        """A connect answer from Redis, or None: anything else (a refusal too) is the database's to say."""
        data = self._cache.lookup(x, c, extension)
        if data is None or data["expires"] <= now.timestamp() or data.get("x") != x:
            return None
        if extension is not None and data.get("extension") != extension:
            return None
        number, phones = data.get("number"), data.get("phones") or []
        side = _side(c, data["citizen"], number, phones)
        if side is None or (side == DEPARTMENT and data["mode"] == EXTENSION and extension is None):
            return None
        if side == CITIZEN and data["direction"] == TO_CITIZEN:
            return None
        target = data["citizen"] if side == DEPARTMENT else _department_target(number, data.get("last"), phones)
        if target is None:
            return None
        changes = {}
        if side == DEPARTMENT and number is None and data.get("last") != c:
            changes["last_department_caller"] = c
        expires = datetime.fromtimestamp(data["expires"], now.tzinfo)
        if data["renew"] and now + self.renew_period - expires >= self._renew_step:
            changes["expires_at"] = now + self.renew_period
        if changes:
            with database_errors(f"updating binding {data['id']}"), self._session_factory.begin() as session:
                if not session.execute(update(Binding).where(Binding.id == data["id"], Binding.ended_at.is_(None))
                                       .values(**changes)).rowcount:
                    return None  # ended meanwhile
            data = dict(data, last=changes.get("last_department_caller", data.get("last")),
                        expires=changes["expires_at"].timestamp() if "expires_at" in changes else data["expires"])
            self._cache.put(data)
        return _connected(call_id, x, target, TO_CITIZEN if side == DEPARTMENT else TO_DEPARTMENT, data["id"],
                          data["ticket"], data["department"], data["record"])

    # -- the database ------------------------------------------------------------------------------

    def _from_database(self, call_id: str, x: str, c: str, extension: str | None, now: datetime) -> Resolution:
        ended, fill = [], None
        with database_errors(f"resolving a call to {x}"), self._session_factory.begin() as session:
            answer, binding, via_pair, phones = self._find(session, call_id, x, c, extension)
            if binding is not None and answer is None:
                if binding.expires_at <= now:
                    ended = end_bindings(session, [binding.id], EXPIRED, now)
                    answer = _refused(call_id, EXPIRED, x, binding)
                else:
                    answer = self._connect(session, call_id, x, c, binding, phones, now)
                    if not answer.refused:
                        fill = (cache_data(binding, x, phones), [c] if via_pair else [], binding.extension)
        self._lifecycle.forget(ended)
        if fill is not None:
            self._cache.put(fill[0], fill[1], fill[2])
        return answer

    def _find(self, session: Session, call_id: str, x: str, c: str, extension: str | None):
        """(refusal or None, the caller's binding on X or None, found by its party rows?, its department's
        phones)."""
        vn = session.execute(select(VirtualNumber.id, VirtualNumber.state)
                             .where(VirtualNumber.number == x)).one_or_none()
        if vn is None or vn.state == REMOVED:
            return _refused(call_id, UNKNOWN_NUMBER, x), None, False, []
        codes = list(session.scalars(select(Department.code).join(DepartmentPhone, DepartmentPhone.department_id ==
                                                                  Department.id).where(DepartmentPhone.e164 == c)))
        groups: dict[str, list[str]] = {}

        def side(binding: Binding) -> str | None:
            if binding.department not in groups:
                groups[binding.department] = department_phones(session, binding.department)
            return _side(c, binding.citizen_e164, binding.department_number, groups[binding.department])

        if extension is not None:
            binding = session.scalars(select(Binding).join(BindingExtension, BindingExtension.binding_id == Binding.id)
                                      .where(BindingExtension.virtual_number_id == vn.id,
                                             BindingExtension.extension == extension)).one_or_none()
            if binding is None:
                return _refused(call_id, UNKNOWN_EXTENSION, x), None, False, []
            if side(binding) is None:
                return _refused(call_id, UNKNOWN_PAIR, x), None, False, []
            return None, binding, False, groups[binding.department]
        parties = [c] + [department_party(code) for code in codes]
        found = [b for b in session.scalars(select(Binding).join(BindingParty, BindingParty.binding_id == Binding.id)
                                            .where(BindingParty.virtual_number_id == vn.id,
                                                   BindingParty.party.in_(parties))).unique() if side(b)]
        via_pair = bool(found)
        if not found and codes:
            found = [b for b in session.scalars(
                select(Binding).join(BindingExtension, BindingExtension.binding_id == Binding.id)
                .where(BindingExtension.virtual_number_id == vn.id, Binding.department.in_(codes))) if side(b)]
            if len(found) > 1:
                return _refused(call_id, EXTENSION_REQUIRED, x, announcement=ENTER_EXTENSION), None, False, []
        if len(found) > 1:
            return _refused(call_id, AMBIGUOUS, x), None, False, []
        if not found:
            return _refused(call_id, self._why_not(session, vn, c, codes), x), None, False, []
        return None, found[0], via_pair, groups[found[0].department]

    @staticmethod
    def _why_not(session: Session, vn, c: str, codes: list[str]) -> str:
        """Why a caller holds no live binding on X: how its last one there ended, else the number's state."""
        mine = [Binding.citizen_e164 == c, Binding.department_number == c]
        if codes:
            mine.append(Binding.department.in_(codes) & Binding.department_number.is_(None))
        reason = session.scalar(select(Binding.end_reason).where(Binding.virtual_number_id == vn.id,
                                                                  Binding.ended_at.is_not(None), or_(*mine))
                                .order_by(Binding.ended_at.desc()).limit(1))
        if reason:
            return reason
        return NUMBER_RESERVED if vn.state == RESERVED else UNKNOWN_PAIR

    def _connect(self, session: Session, call_id: str, x: str, c: str, binding: Binding, phones: list[str],
                 now: datetime) -> Resolution:
        side = _side(c, binding.citizen_e164, binding.department_number, phones)
        if side == CITIZEN and binding.direction == TO_CITIZEN:
            return _refused(call_id, DIRECTION_NOT_ALLOWED, x, binding, direction=TO_DEPARTMENT)
        if side == DEPARTMENT:
            target, direction = binding.citizen_e164, TO_CITIZEN
            if binding.department_number is None and binding.last_department_caller != c:
                binding.last_department_caller = c
        else:
            target, direction = _department_target(binding.department_number, binding.last_department_caller,
                                                   phones), TO_DEPARTMENT
            if target is None:
                return _refused(call_id, NO_DEPARTMENT_PHONE, x, binding, direction=direction)
        if binding.renew_on_use and now + self.renew_period - binding.expires_at >= self._renew_step:
            binding.expires_at = now + self.renew_period
        return _connected(call_id, x, target, direction, binding.id, binding.ticket_number, binding.department,
                          binding.record)

    def dial_target(self, call_id: str, within: timedelta = timedelta(minutes=2)) -> str | None:
        """The real number to dial for call ``call_id``, which ``resolve`` connected less than ``within``
        ago on a binding still live; else None. For the outgoing leg only (asterisk/extensions.conf
        [hotline-virtual-out]): the caller's leg is given an opaque call id, never the number."""
        now = self._clock()
        with database_errors(f"reading the target of call {call_id}"), self._session_factory() as session:
            row = session.execute(
                select(ResolutionRecord.direction, Binding)
                .join(Binding, Binding.id == ResolutionRecord.binding_id)
                .where(ResolutionRecord.call_id == _call_id(call_id), ResolutionRecord.outcome == CONNECTED,
                       ResolutionRecord.started_at >= now - within, Binding.ended_at.is_(None),
                       Binding.expires_at > now)).one_or_none()
            if row is None:
                return None
            direction, binding = row
            if direction == TO_CITIZEN:
                return binding.citizen_e164
            return _department_target(binding.department_number, binding.last_department_caller,
                                      department_phones(session, binding.department))

    # -- receipts ----------------------------------------------------------------------------------

    def _audit(self, answer: Resolution, virtual_number: str, caller_masked: str, now: datetime) -> None:
        values = dict(call_id=answer.call_id, binding_id=answer.binding_id, virtual_number=virtual_number[:32],
                      caller_masked=caller_masked[:32], callee_masked=answer.target_masked,
                      direction=answer.direction, outcome=answer.reason or CONNECTED, started_at=now)
        try:
            with database_errors(f"recording call {answer.call_id}"), self._session_factory.begin() as session:
                dialect = session.get_bind().dialect.name
                if dialect in ("postgresql", "sqlite"):
                    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
                    later = {k: v for k, v in values.items() if k not in ("call_id", "started_at")}
                    session.execute(insert(ResolutionRecord).values(**values).on_conflict_do_update(
                        index_elements=["call_id"], set_=later,
                        where=ResolutionRecord.outcome == EXTENSION_REQUIRED))
                    return
                record = session.scalars(select(ResolutionRecord)
                                         .where(ResolutionRecord.call_id == answer.call_id)).one_or_none()
                if record is None:
                    session.add(ResolutionRecord(**values))
                elif record.outcome == EXTENSION_REQUIRED:
                    for key, value in values.items():
                        if key != "started_at":
                            setattr(record, key, value)
        except StorageError as exc:
            _NOT_AUDITED.inc()
            log.error("virtual numbers: call %s (%s) was not recorded: %s", answer.call_id,
                      answer.reason or CONNECTED, exc)

    def record_call(self, call_id: str, answered_at: datetime | None = None, ended_at: datetime | None = None,
                    hangup_by: str | None = None) -> Receipt:
        """Complete a call's receipt with what the switch reports (given fields only)."""
        changes = {}
        for name, value in (("answered_at", answered_at), ("ended_at", ended_at)):
            if value is not None:
                if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
                    raise InvalidRequest(f"{name} must be a datetime with a time zone")
                changes[name] = value
        if hangup_by is not None:
            if hangup_by not in HANGUP_BY:
                raise InvalidRequest(f"hangup_by must be one of {', '.join(HANGUP_BY)}")
            changes["hangup_by"] = hangup_by
        call_id = _call_id(call_id)
        with database_errors(f"recording call {call_id}"), self._session_factory.begin() as session:
            if changes:
                session.execute(update(ResolutionRecord).where(ResolutionRecord.call_id == call_id).values(**changes))
            row = session.execute(_RECEIPTS.where(ResolutionRecord.call_id == call_id)).one_or_none()
        if row is None:
            raise ReceiptNotFound(f"no call {call_id} was resolved")
        return _receipt(row)

    def receipts(self, department: str | None = None, ticket_number: str | None = None,
                 limit: int = 100) -> list[Receipt]:
        """Newest first; a department sees its bindings' calls only (refusals with no binding: nobody's but
        a supervisor's, who passes no department)."""
        query = _RECEIPTS.order_by(ResolutionRecord.started_at.desc(), ResolutionRecord.id.desc()).limit(
            max(1, min(int(limit), 1000)))
        if department is not None:
            query = query.where(Binding.department == department)
        if ticket_number is not None:
            query = query.where(Binding.ticket_number == ticket_number)
        with database_errors("listing call receipts"), self._session_factory() as session:
            return [_receipt(row) for row in session.execute(query)]


_RECEIPTS = (select(ResolutionRecord, Binding.ticket_number, Binding.department)
             .outerjoin(Binding, Binding.id == ResolutionRecord.binding_id))


def _receipt(row) -> Receipt:
    record, ticket_number, department = row
    return Receipt(record.call_id, record.binding_id, ticket_number, department, record.virtual_number,
                   record.caller_masked, record.callee_masked, record.direction, record.outcome, record.started_at,
                   record.answered_at, record.ended_at, record.hangup_by)


def _call_id(call_id: object) -> str:
    text = _CONTROL.sub("", call_id if isinstance(call_id, str) else "").strip()[:CALL_ID_MAX]
    return text or uuid.uuid4().hex


def _side(c: str, citizen: str, number: str | None, phones: list[str]) -> str | None:
    if c == citizen:
        return CITIZEN
    if (c == number) if number else (c in phones):
        return DEPARTMENT
    return None


def _department_target(number: str | None, last: str | None, phones: list[str]) -> str | None:
    if number:
        return number
    if last and last in phones:
        return last
    return phones[0] if phones else None


def _refused(call_id: str, reason: str, x: str | None = None, binding: Binding | None = None, *,
             announcement: str = NOT_IN_SERVICE, direction: str | None = None) -> Resolution:
    return Resolution(refused=True, reason=reason, announcement=announcement, call_id=call_id, virtual_number=x,
                      direction=direction, binding_id=binding.id if binding else None,
                      ticket_number=binding.ticket_number if binding else None,
                      department=binding.department if binding else None)


def _connected(call_id: str, x: str, target: str, direction: str, binding_id: int, ticket_number: str,
               department: str, record: bool) -> Resolution:
    return Resolution(refused=False, announcement=CALL_RECORDED if record else None, call_id=call_id,
                      virtual_number=x, caller_id=x, target=target, direction=direction, binding_id=binding_id,
                      ticket_number=ticket_number, department=department, record=record)
