"""Reading numbers into E.164, and the names of the parties the reuse rule counts.

A party is the citizen's E.164, ``dept:<code>`` for a department side, or the one number B.

Reading a number (phonenumbers) costs more than the rest of a resolution's fast path, and the same
callers and virtual numbers come back all day: each process keeps the last ``_KEPT`` readings (of
strings of up to ``_LONGEST`` characters), and the masked forms receipts show.
"""

from __future__ import annotations

import functools

from orders.caller import INVALID, SERVICE, WITHHELD, mask, normalise_caller
from virtual_numbers.errors import InvalidParty, UnknownNumber

DEPARTMENT_PREFIX = "dept:"
_KEPT = 65536
_LONGEST = 40  # longer text is read each time: what is kept stays small


def department_party(code: str) -> str:
    return DEPARTMENT_PREFIX + code


def caller_e164(raw: object, region: str, local_area_code: str | None = None) -> str | None:
    """The E.164 form of a caller (anyone who can be called back), or None (withheld, invalid, short)."""
    if not isinstance(raw, str):
        raw = None
    elif len(raw) > _LONGEST:
        return _caller_e164.__wrapped__(raw, region, local_area_code)
    return _caller_e164(raw, region, local_area_code)


@functools.lru_cache(maxsize=_KEPT)
def _caller_e164(raw: str | None, region: str, local_area_code: str | None) -> str | None:
    number = normalise_caller(raw, region, local_area_code)
    if number.kind in (WITHHELD, INVALID, SERVICE) or number.e164 is None:
        return None
    return number.e164


def citizen_e164(raw: object, region: str, local_area_code: str | None = None) -> str:
    e164 = caller_e164(raw, region, local_area_code)
    if e164 is None:
        raise InvalidParty("the citizen's number is not a phone number a call can reach")
    return e164


def pool_e164(raw: object, region: str) -> str | None:
    """The E.164 form of a virtual number (service numbers such as 400 ones included), or None."""
    if not isinstance(raw, str):
        raw = None
    elif len(raw) > _LONGEST:
        return _pool_e164.__wrapped__(raw, region)
    return _pool_e164(raw, region)


@functools.lru_cache(maxsize=_KEPT)
def _pool_e164(raw: str | None, region: str) -> str | None:
    return normalise_caller(raw, region).e164


def masked(number: str) -> str:
    """``orders.caller.mask`` of a number string."""
    return _masked(number) if len(number) <= _LONGEST else mask(number)


@functools.lru_cache(maxsize=_KEPT)
def _masked(number: str) -> str:
    return mask(number)


def require_pool_e164(raw: object, region: str) -> str:
    e164 = pool_e164(raw, region)
    if e164 is None:
        raise UnknownNumber(f"{mask(raw if isinstance(raw, str) else '')} is not a phone number")
    return e164
