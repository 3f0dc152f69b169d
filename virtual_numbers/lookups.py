"""Reading bindings back: a department's phones, a binding's view, its data for the cache, the cache rebuild."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orders.caller import mask
from orders.models import Department, DepartmentPhone
from orders.store import database_errors
from virtual_numbers.cache import BindingCache
from virtual_numbers.models import Binding, VirtualNumber
from virtual_numbers.views import PAIR, BindingView

WITH_NUMBER = select(Binding, VirtualNumber.number).join(VirtualNumber, VirtualNumber.id == Binding.virtual_number_id)


def department_phones(session: Session, code: str) -> list[str]:
    """A department's phones (its group G), first added first: the first is its line."""
    return list(session.scalars(select(DepartmentPhone.e164)
                                .join(Department, Department.id == DepartmentPhone.department_id)
                                .where(Department.code == code).order_by(DepartmentPhone.id)))


def view(binding: Binding, x: str) -> BindingView:
    return BindingView(binding.id, binding.ticket_number, mask(binding.citizen_e164), binding.department,
                       binding.department_number, x, binding.extension, binding.mode, binding.direction,
                       binding.record, binding.created_at, binding.expires_at, binding.renew_on_use,
                       binding.ended_at, binding.end_reason)


def read_binding(session_factory: sessionmaker, binding_id: int) -> BindingView | None:
    with database_errors(f"reading binding {binding_id}"), session_factory() as session:
        row = session.execute(WITH_NUMBER.where(Binding.id == binding_id)).one_or_none()
    return None if row is None else view(*row)


def cache_data(binding: Binding, x: str, phones: list[str]) -> dict:
    """What a resolution needs from the cache; ``phones`` (the department's) only matter for a group."""
    return {"id": binding.id, "ticket": binding.ticket_number, "citizen": binding.citizen_e164,
            "department": binding.department, "number": binding.department_number, "x": x, "mode": binding.mode,
            "extension": binding.extension, "direction": binding.direction, "record": binding.record,
            "expires": binding.expires_at.timestamp(), "renew": binding.renew_on_use,
            "last": binding.last_department_caller, "phones": [] if binding.department_number else phones}


def refresh_cache(session_factory: sessionmaker, cache: BindingCache, ids_query=None) -> int:
    """Write live bindings (all, or those ``ids_query`` selects) to the cache; returns how many.

    A full refresh also points every caller at its binding, except a caller who is a party of several
    bindings on one number (left to the database, which refuses the ambiguity)."""
    query = WITH_NUMBER.where(Binding.ended_at.is_(None)).order_by(Binding.id)
    if ids_query is not None:
        query = query.where(Binding.id.in_(ids_query))
    with database_errors("reading the live bindings"), session_factory() as session:
        live = [(binding, x) for binding, x in session.execute(query)]
        groups = {code: department_phones(session, code) for code in {b.department for b, _ in live}}
    callers: dict[tuple[str, str], int] = {}  # how many live bindings on X each caller is a party of
    parties: dict[int, set[str]] = {}
    for binding, x in live:
        side = []  # a department reaches an extension binding by its extension
        if binding.mode == PAIR:
            side = [binding.department_number] if binding.department_number else groups[binding.department]
        parties[binding.id] = {binding.citizen_e164, *side}
        for caller in parties[binding.id]:
            callers[(x, caller)] = callers.get((x, caller), 0) + 1
    count = 0
    for binding, x in live:
        pairs = [] if ids_query is not None else [c for c in parties[binding.id] if callers[(x, c)] == 1]
        count += cache.put(cache_data(binding, x, groups[binding.department]), pairs, binding.extension)
    return count
