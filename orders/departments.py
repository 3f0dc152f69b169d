"""Departments, the numbers they call citizens back from, and the dispatch catalogue.

A department has a code (``water``, ``longhua-city-management``), names in Mandarin and English, and an
optional parent (a district). Its phone numbers are the only numbers the masking broker lets call a
citizen back for it. The dispatch catalogue says, per category (and district, or anywhere: ``""``), which
department leads, which support, what kind of request it is and how many working days the answer may take;
it is a data file (``load_catalogue``) an operator edits, and rules can be changed one by one over the API.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from orders.cases import ANSWER_DAYS, TEXT_LIMITS, CatalogueRule, valid_code
from orders.errors import OrdersError
from orders.models import Department, DepartmentPhone, DispatchRule
from orders.snapshot import CONTROL_CHARACTERS
from orders.store import database_errors

KINDS = tuple(ANSWER_DAYS)


class DepartmentError(OrdersError, ValueError):
    """A department, phone or catalogue rule cannot be created or changed as asked (the message says why)."""


class DepartmentNotFound(OrdersError, LookupError):
    """No department has this code."""


@dataclass(frozen=True)
class DepartmentView:
    code: str
    name_zh: str
    name_en: str
    parent_code: str | None
    active: bool
    phones: tuple[str, ...] = ()  # E.164


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not CONTROL_CHARACTERS.sub("", value).strip():
        raise DepartmentError(f"{what} must be non-empty text")
    return CONTROL_CHARACTERS.sub("", value).strip()[:200]


def _code(value: object, what: str = "code") -> str:
    if not valid_code(value):
        raise DepartmentError(f"{what} must be lowercase letters, digits, '-' or '_' (1 to 50), got {str(value)[:60]!r}")
    return value


class DepartmentStore:
    """Departments, their phones and the dispatch catalogue, over a SQLAlchemy session factory."""

    def __init__(self, session_factory: sessionmaker, region: str = "CN") -> None:
        self._session_factory = session_factory
        self.region = region

    # -- departments ------------------------------------------------------------------------------

    def create(self, code: str, name_zh: str, name_en: str, parent_code: str | None = None) -> DepartmentView:
        code, name_zh, name_en = _code(code), _name(name_zh, "name_zh"), _name(name_en, "name_en")
        with database_errors(f"creating department {code}"), self._session_factory.begin() as session:
            if parent_code is not None:
                self._require(session, _code(parent_code, "parent_code"))
            if session.scalar(select(Department.id).where(Department.code == code)) is not None:
                raise DepartmentError(f"department {code} exists already")
            session.add(Department(code=code, name_zh=name_zh, name_en=name_en, parent_code=parent_code, active=True))
        return self.get(code)

    def update(self, code: str, *, name_zh: str | None = None, name_en: str | None = None,
               parent_code: str | None = None, active: bool | None = None) -> DepartmentView:
        """Change what is given (None: unchanged); ``parent_code=""`` makes it a top-level department."""
        with database_errors(f"changing department {code}"), self._session_factory.begin() as session:
            department = self._require(session, code)
            if name_zh is not None:
                department.name_zh = _name(name_zh, "name_zh")
            if name_en is not None:
                department.name_en = _name(name_en, "name_en")
            if parent_code == "":
                department.parent_code = None
            elif parent_code is not None:
                self._require(session, _code(parent_code, "parent_code"))
                ancestor, seen = parent_code, set()
                while ancestor is not None and ancestor not in seen:  # seen: an old cycle ends the walk too
                    if ancestor == code:
                        raise DepartmentError(f"{parent_code} is {code} or below it: a department cannot be "
                                              f"its own ancestor")
                    seen.add(ancestor)
                    ancestor = session.scalar(select(Department.parent_code).where(Department.code == ancestor))
                department.parent_code = parent_code
            if active is not None:
                department.active = bool(active)
        return self.get(code)

    def get(self, code: str) -> DepartmentView:
        with database_errors(f"reading department {code}"), self._session_factory() as session:
            return self._view(session, self._require(session, code))

    def list(self, include_inactive: bool = False) -> list[DepartmentView]:
        with database_errors("listing departments"), self._session_factory() as session:
            query = select(Department).order_by(Department.code)
            if not include_inactive:
                query = query.where(Department.active.is_(True))
            return [self._view(session, d) for d in session.scalars(query)]

    def add_phone(self, code: str, number: str, label: str = "") -> DepartmentView:
        e164 = self._e164(number)
        with database_errors(f"adding a phone to department {code}"), self._session_factory.begin() as session:
            department = self._require(session, code)
            exists = session.scalar(select(DepartmentPhone.id).where(DepartmentPhone.department_id == department.id,
                                                                     DepartmentPhone.e164 == e164))
            if exists is None:
                session.add(DepartmentPhone(department_id=department.id, e164=e164,
                                            label=CONTROL_CHARACTERS.sub("", label or "")[:100]))
        return self.get(code)

    def remove_phone(self, code: str, number: str) -> DepartmentView:
        e164 = self._e164(number)
        with database_errors(f"removing a phone of department {code}"), self._session_factory.begin() as session:
            department = self._require(session, code)
            session.execute(delete(DepartmentPhone).where(DepartmentPhone.department_id == department.id,
                                                          DepartmentPhone.e164 == e164))
        return self.get(code)

    def _e164(self, number: str) -> str:
        try:
            parsed = phonenumbers.parse(number, self.region)
        except phonenumbers.NumberParseException:
            raise DepartmentError("phone must be a phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            raise DepartmentError("phone is not a valid phone number")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @staticmethod
    def _require(session, code: str) -> Department:
        department = session.scalars(select(Department).where(Department.code == code)).one_or_none()
        if department is None:
            raise DepartmentNotFound(f"no department {code}")
        return department

    @staticmethod
    def _view(session, department: Department) -> DepartmentView:
        phones = session.scalars(select(DepartmentPhone.e164).where(DepartmentPhone.department_id == department.id)
                                 .order_by(DepartmentPhone.e164))
        return DepartmentView(department.code, department.name_zh, department.name_en, department.parent_code,
                              department.active, tuple(phones))

    # -- the dispatch catalogue --------------------------------------------------------------------

    def rules(self) -> list[CatalogueRule]:
        with database_errors("reading the dispatch catalogue"), self._session_factory() as session:
            return [CatalogueRule.of(r) for r in session.scalars(
                select(DispatchRule).order_by(DispatchRule.category, DispatchRule.district))]

    def put_rule(self, category: str, lead: str, *, district: str = "", kind: str = "help",
                 supporting: tuple[str, ...] | list[str] = (), answer_days: int | None = None) -> CatalogueRule:
        """Create or replace the rule for ``category`` in ``district`` ('' = anywhere)."""
        with database_errors("changing the dispatch catalogue"), self._session_factory.begin() as session:
            view = self._put(session, category, lead, district, kind, tuple(supporting), answer_days)
        return view

    def delete_rule(self, category: str, district: str = "") -> bool:
        with database_errors("changing the dispatch catalogue"), self._session_factory.begin() as session:
            result = session.execute(delete(DispatchRule).where(DispatchRule.category == category,
                                                                DispatchRule.district == (district or "")))
            return result.rowcount > 0

    def load_catalogue(self, path: str | os.PathLike) -> int:
        """Replace the whole catalogue with the file's ``[[rule]]`` tables (TOML: category, district, kind,
        lead, supporting, answer_days); all or nothing. Returns how many rules it holds now."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise DepartmentError(f"cannot read the dispatch catalogue {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise DepartmentError(f"the dispatch catalogue {path} is not valid TOML: {exc}") from None
        entries = data.get("rule", [])
        if set(data) - {"rule"} or not isinstance(entries, list):
            raise DepartmentError(f"the dispatch catalogue {path} must hold only [[rule]] tables")
        with database_errors("loading the dispatch catalogue"), self._session_factory.begin() as session:
            session.execute(delete(DispatchRule))
            for i, entry in enumerate(entries, 1):
                if not isinstance(entry, dict):
                    raise DepartmentError(f"{path}: rule {i} is not a table")
                unknown = set(entry) - {"category", "district", "kind", "lead", "supporting", "answer_days"}
                if unknown:
                    raise DepartmentError(f"{path}: rule {i} has unknown key(s) {', '.join(sorted(unknown))}")
                supporting = entry.get("supporting", [])
                if not isinstance(supporting, list) or not all(isinstance(code, str) for code in supporting):
                    raise DepartmentError(f"{path}: rule {i}: supporting must be a list of department codes")
                try:
                    self._put(session, entry.get("category"), entry.get("lead"), entry.get("district", ""),
                              entry.get("kind", "help"), tuple(supporting), entry.get("answer_days"))
                except DepartmentError as exc:
                    raise DepartmentError(f"{path}: rule {i}: {exc}") from None
                session.flush()
            return len(entries)

    def _put(self, session, category, lead, district, kind, supporting, answer_days) -> CatalogueRule:
        if not isinstance(category, str) or not category.strip() or len(category) > TEXT_LIMITS["category"]:
            raise DepartmentError("category must be text of 1 to 50 characters")
        district = district or ""
        if district and not valid_code(district):
            raise DepartmentError("district must be a code (lowercase letters, digits, '-' or '_')")
        if kind not in KINDS:
            raise DepartmentError(f"kind must be one of {', '.join(KINDS)}")
        if answer_days is None:
            answer_days = ANSWER_DAYS[kind]
        if isinstance(answer_days, bool) or not isinstance(answer_days, int) or not 1 <= answer_days <= 365:
            raise DepartmentError("answer_days must be a whole number from 1 to 365")
        codes = [_code(lead, "lead"), *(_code(code, "supporting") for code in supporting)]
        known = set(session.scalars(select(Department.code).where(Department.code.in_(codes),
                                                                   Department.active.is_(True))))
        unknown = [code for code in codes if code not in known]
        if unknown:  # an inactive one too: the dispatch it suggests would be refused
            raise DepartmentError(f"no active department {', '.join(unknown)}")
        supporting = tuple(dict.fromkeys(code for code in supporting if code != lead))
        rule = session.scalars(select(DispatchRule).where(DispatchRule.category == category,
                                                          DispatchRule.district == district)).one_or_none()
        if rule is None:
            rule = DispatchRule(category=category, district=district)
            session.add(rule)
        rule.kind, rule.lead, rule.supporting, rule.answer_days = kind, lead, ",".join(supporting), answer_days
        try:
            session.flush()
        except IntegrityError:
            raise DepartmentError(f"a rule for {category} in {district or 'any district'} was written meanwhile; "
                                  f"try again") from None
        return CatalogueRule.of(rule)
