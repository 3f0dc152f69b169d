"""Reading numbers into E.164, and the names of the parties the reuse rule counts.

A party is the citizen's E.164, ``dept:<code>`` for a department side, or the one number B.
"""

from __future__ import annotations

from orders.caller import INVALID, SERVICE, WITHHELD, mask, normalise_caller
from virtual_numbers.errors import InvalidParty, UnknownNumber

DEPARTMENT_PREFIX = "dept:"


def department_party(code: str) -> str:
    return DEPARTMENT_PREFIX + code


def caller_e164(raw: object, region: str, local_area_code: str | None = None) -> str | None:
    """The E.164 form of a caller (anyone who can be called back), or None (withheld, invalid, short)."""
    number = normalise_caller(raw if isinstance(raw, str) else None, region, local_area_code)
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
    number = normalise_caller(raw if isinstance(raw, str) else None, region)
    return number.e164


def require_pool_e164(raw: object, region: str) -> str:
    e164 = pool_e164(raw, region)
    if e164 is None:
        raise UnknownNumber(f"{mask(raw if isinstance(raw, str) else '')} is not a phone number")
    return e164
