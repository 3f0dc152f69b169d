"""Resolving a call to a virtual number by the pair (caller, dialled X [, extension]).

Never by X alone: the caller must be a party of a live binding on X. The citizen reaches the department
side (B, else the department phone that last called, else the department's line); a department phone
(B, or one of the group G) reaches the citizen. The number presented to the callee is always X.

Without an extension the caller's party rows on X decide; a department with no pair binding on X but
extension bindings there is connected when it has exactly one, asked for the extension when it has more.
A caller who is a party of two bindings on X (a phone two departments share) is refused, not guessed.

The fast path is one Redis round trip (virtual_numbers.cache): a connect answer from the binding's
cached data (checked against the caller), else a refusal the database gave before and that no change on
X has outdated since, else the database, whose answer refills the cache. Every resolution leaves one
receipt per call id (virtual_numbers.receipts); with a receipt spool it is written off the call path.
A connected call's outgoing leg (``dial_target``) finds its target through the call's note in Redis, or
its receipt: a connected call whose note could not be written has its receipt written before the answer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from base import metrics
from orders.models import Department, DepartmentPhone
from orders.store import database_errors
from virtual_numbers.cache import BindingCache
from virtual_numbers.lifecycle import Lifecycle, end_bindings
from virtual_numbers.lookups import cache_data, department_phones
from virtual_numbers.models import Binding, BindingExtension, BindingParty, ResolutionRecord, VirtualNumber
from virtual_numbers.parties import caller_e164, department_party, masked, pool_e164
from virtual_numbers.receipts import ReceiptWriter, call_id_of
from virtual_numbers.views import (AMBIGUOUS, CALL_RECORDED, CONNECTED, DIRECTION_NOT_ALLOWED, ENTER_EXTENSION,
                                   EXPIRED, EXTENSION, EXTENSION_REQUIRED, NO_DEPARTMENT_PHONE, NOT_IN_SERVICE,
                                   NUMBER_RESERVED, REFUSALS, REMOVED, RESERVED, TO_CITIZEN, TO_DEPARTMENT,
                                   UNKNOWN_CALLER, UNKNOWN_EXTENSION, UNKNOWN_NUMBER, UNKNOWN_PAIR, Resolution)

log = logging.getLogger(__name__)

_RESOLUTIONS = metrics.counter("hotline_virtual_resolutions_total",
                               "Calls to virtual numbers resolved, by outcome and where the answer came from",
                               ["outcome", "source"])
_SECONDS = metrics.histogram("hotline_virtual_resolution_seconds", "Time to resolve a call to a virtual number",
                             ["source"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0))

_DIGITS = re.compile(r"[0-9]{1,8}")
_RECEIPT_WAIT = 0.2  # seconds the outgoing leg waits at most for another process's receipt
CITIZEN, DEPARTMENT = "citizen", "department"  # the caller's side of a binding
#: A refusal's fields kept in the cache (never a number: the receipt's masked numbers come from the call).
_REFUSAL_FIELDS = ("reason", "announcement", "direction", "binding_id", "ticket_number", "department")


class Resolver:
    def __init__(self, session_factory: sessionmaker, cache: BindingCache, lifecycle: Lifecycle,
                 receipts: ReceiptWriter, *, region: str, local_area_code: str | None, clock: Callable[[], datetime],
                 renew_period: timedelta) -> None:
        self._session_factory = session_factory
        self._cache = cache
        self._lifecycle = lifecycle
        self._receipts = receipts
        self._region = region
        self._local_area_code = local_area_code
        self._clock = clock
        self.renew_period = renew_period
        # Renewal writes only when it gains this much: a busy binding is not rewritten on every call.
        self._renew_step = max(timedelta(minutes=1), renew_period / 100)
        self._counters: dict[tuple[str, str], object] = {}
        self._timers = {source: _SECONDS.labels(source) for source in ("cache", "database", "none")}

    def resolve(self, caller: str | None, dialled: str, extension: str | None = None,
                call_id: str | None = None) -> Resolution:
        started = time.perf_counter()
        now = self._clock()
        call_id = call_id_of(call_id)
        x = pool_e164(dialled, self._region)
        c = caller_e164(caller, self._region, self._local_area_code)
        extension = None if extension in (None, "") else str(extension)
        source, noted = "none", False
        if x is None:
            answer = _refused(call_id, UNKNOWN_NUMBER)
        elif c is None:
            answer = _refused(call_id, UNKNOWN_CALLER, x)
        elif extension is not None and not _DIGITS.fullmatch(extension):
            answer = _refused(call_id, UNKNOWN_EXTENSION, x)
        else:
            at = now.timestamp()
            found = self._cache.lookup(x, c, extension, call_id, at)
            answer = None if found.data is None else self._from_cache(call_id, x, c, extension, now, at, found.data)
            if answer is not None:
                source, noted = "cache", found.noted
            else:
                if found.data is not None:  # a live binding that does not connect this caller: refused before?
                    found = self._cache.refusal(x, c, extension)
                if found.refusal is not None and (answer := _cached_refusal(call_id, x, found.refusal)) is not None:
                    source = "cache"
                else:
                    answer, noted = self._from_database(call_id, x, c, extension, now, found.generation)
                    source = "database"
        self._receipts.record(
            {"call_id": answer.call_id, "binding_id": answer.binding_id,
             "virtual_number": x or masked(dialled if isinstance(dialled, str) else "")[:32],
             "caller_masked": masked(c or (caller if isinstance(caller, str) else ""))[:32],
             "callee_masked": None if answer.target is None else masked(answer.target),
             "direction": answer.direction, "outcome": answer.reason or CONNECTED, "started_at": now},
            now=not (answer.refused or noted))
        key = (answer.reason or CONNECTED, source)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _RESOLUTIONS.labels(*key)
        counter.inc()
        self._timers[source].observe(time.perf_counter() - started)
        return answer

    # -- the fast path -----------------------------------------------------------------------------

    def _from_cache(self, call_id: str, x: str, c: str, extension: str | None, now: datetime, at: float,
                    data: dict) -> Resolution | None:
        """A connect answer from the binding's cached data, or None: anything else is not the binding
        entry's to say."""
        decided = _decide(data, x, c, extension, at)
        if decided is None:
            return None
        side, target = decided
        changes = {}
        if side == DEPARTMENT and data.get("number") is None and data.get("last") != c:
            changes["last_department_caller"] = c
        if data["renew"] and now + self.renew_period - datetime.fromtimestamp(data["expires"], now.tzinfo) \
                >= self._renew_step:
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

    def _from_database(self, call_id: str, x: str, c: str, extension: str | None, now: datetime,
                       generation: str | None) -> tuple[Resolution, bool]:
        """The database's answer, and whether the call's note was written (a connect answer only). The
        cache is refilled: a connect answer's binding, or the refusal, kept under X's ``generation`` read
        before the database was."""
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
        self._lifecycle.forget(ended)  # a new generation for X: the refusal below is then not kept
        if fill is not None:
            return answer, self._cache.put(fill[0], fill[1], fill[2], note=(call_id, now.timestamp(), extension, c))
        if answer.refused and answer.binding_id is None:
            # Kept: refusals with no binding of the caller's on X (only a change on X alters them). Not kept:
            # one about a binding (direction not allowed, no department phone, expired just now), which its
            # own expiry or its department's phones could change without a new generation for X.
            self._cache.refuse(x, c, extension, generation, {f: getattr(answer, f) for f in _REFUSAL_FIELDS})
        return answer, False

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
        [hotline-virtual-out]): the caller's leg is given an opaque call id, never the number.

        The call's note in Redis (written by the resolution, perhaps in another process) names the binding
        and the caller: the target is decided again from them, as the resolution did. Without a note (no
        Redis, or it lost it), the call's receipt in the database says whether it was connected."""
        now = self._clock()
        call_id = call_id_of(call_id)
        note = self._cache.note(call_id)
        if note is not None:
            if now.timestamp() - note.at >= within.total_seconds() or note.ended:
                return None
            if note.data is not None:
                decided = _decide(note.data, note.data.get("x"), note.caller, note.extension, now.timestamp())
                return None if decided is None else decided[1]
            with database_errors(f"reading the target of call {call_id}"), self._session_factory() as session:
                binding = session.scalars(select(Binding).where(Binding.id == note.binding_id,
                                                                Binding.ended_at.is_(None),
                                                                Binding.expires_at > now)).one_or_none()
                if binding is None:
                    return None
                return _database_target(note.caller, binding, department_phones(session, binding.department))
        self._receipts.flush()  # this process's receipts first: the call may be one of them
        recorded, target = self._target_from_receipt(call_id, now, within)
        if not recorded and self._receipts.batched:
            # Resolved by another process whose writer may hold the receipt for up to its interval: once more.
            time.sleep(min(2 * self._receipts.interval, _RECEIPT_WAIT))
            recorded, target = self._target_from_receipt(call_id, now, within)
        return target

    def _target_from_receipt(self, call_id: str, now: datetime, within: timedelta) -> tuple[bool, str | None]:
        """(the call has a receipt, the target if it connected less than ``within`` ago on a live binding)."""
        with database_errors(f"reading the target of call {call_id}"), self._session_factory() as session:
            row = session.execute(
                select(ResolutionRecord.outcome, ResolutionRecord.started_at, ResolutionRecord.direction, Binding)
                .outerjoin(Binding, Binding.id == ResolutionRecord.binding_id)
                .where(ResolutionRecord.call_id == call_id)).one_or_none()
            if row is None:
                return False, None
            outcome, started_at, direction, binding = row
            if outcome != CONNECTED or started_at < now - within or binding is None or binding.ended_at is not None \
                    or binding.expires_at <= now:
                return True, None
            if direction == TO_CITIZEN:
                return True, binding.citizen_e164
            return True, _department_target(binding.department_number, binding.last_department_caller,
                                            department_phones(session, binding.department))


def _decide(data: dict, x: str | None, c: str, extension: str | None, at: float) -> tuple[str, str] | None:
    """(the caller's side, the target) when a binding's cached data connects caller ``c`` dialling X
    [with ``extension``] at time ``at``; None when it does not (that is the database's to say)."""
    if data.get("x") != x or data["expires"] <= at:
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
    return None if target is None else (side, target)


def _database_target(c: str, binding: Binding, phones: list[str]) -> str | None:
    side = _side(c, binding.citizen_e164, binding.department_number, phones)
    if side == DEPARTMENT:
        return binding.citizen_e164
    if side == CITIZEN and binding.direction != TO_CITIZEN:
        return _department_target(binding.department_number, binding.last_department_caller, phones)
    return None


def _cached_refusal(call_id: str, x: str, kept: dict) -> Resolution | None:
    """A refusal kept in the cache, for this call; None if it is not one (then the database decides)."""
    reason = kept.get("reason")
    if reason not in REFUSALS:
        return None
    return Resolution(refused=True, reason=reason, announcement=kept.get("announcement") or NOT_IN_SERVICE,
                      call_id=call_id, virtual_number=x, direction=kept.get("direction"),
                      binding_id=kept.get("binding_id"), ticket_number=kept.get("ticket_number"),
                      department=kept.get("department"))


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
