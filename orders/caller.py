"""Caller numbers: what Asterisk (or a carrier) hands us, read into E.164 and sorted by kind.

Choices a reader should know:

* A landline without its area code (``66668888``) is ambiguous: the network only sends it that way for
  calls from the hotline's own city. It is read as a local number when ``local_area_code`` is given
  (``"898"`` for Haikou) and is ``invalid`` otherwise, never guessed. ``raw`` keeps the digits either way.
* Short service numbers (110, 12345, 95598, 96xxx, ...) are ``service`` with no E.164 form; 400/800
  numbers are ``service`` too, but keep their E.164 form.
* ``raw`` is the received text without control characters, cut to 64 characters, so it can be stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo

MOBILE = "mobile"
LANDLINE = "landline"
SERVICE = "service"
INTERNATIONAL = "international"
WITHHELD = "withheld"
INVALID = "invalid"
KINDS = (MOBILE, LANDLINE, SERVICE, INTERNATIONAL, WITHHELD, INVALID)

#: What switches and carriers put in the caller ID when the caller hides it (compared lower-cased).
WITHHELD_WORDS = frozenset(
    {"", "unknown", "anonymous", "restricted", "private", "withheld", "unavailable", "blocked", "<unknown>"}
)

RAW_MAX_LENGTH = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[\s\-.()/]")
_DIALABLE = re.compile(r"\+?[0-9]{1,20}")
_LOCAL_NUMBER = re.compile(r"[2-9][0-9]{6,7}")
_AREA_CODE = re.compile(r"[1-9][0-9]{1,3}")

_SERVICE_TYPES = {
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.UAN,
}


@dataclass(frozen=True)
class CallerNumber:
    """A caller number as received (``raw``), its E.164 form when it has one, and its kind."""

    raw: str
    e164: str | None
    kind: str

    @property
    def withheld(self) -> bool:
        return self.kind == WITHHELD

    def masked(self) -> str:
        return mask(self)


def normalise_caller(raw: str | None, region: str = "CN", local_area_code: str | None = None) -> CallerNumber:
    """Read a caller number; never raises, whatever the text (unusable input is ``invalid``)."""
    text = _CONTROL.sub("", raw if isinstance(raw, str) else "")[:RAW_MAX_LENGTH]
    if text.strip().lower() in WITHHELD_WORDS:
        return CallerNumber(text, None, WITHHELD)
    dialable = _SEPARATORS.sub("", text)
    if not _DIALABLE.fullmatch(dialable):
        return CallerNumber(text, None, INVALID)
    try:
        number = phonenumbers.parse(dialable, region)
    except phonenumbers.NumberParseException:
        return CallerNumber(text, None, INVALID)

    if phonenumbers.is_valid_number(number):
        return CallerNumber(text, _e164(number), _kind(number, region))
    if not dialable.startswith(("+", "0")) and shortnumberinfo.is_valid_short_number_for_region(number, region):
        return CallerNumber(text, None, SERVICE)
    area_known = isinstance(local_area_code, str) and _AREA_CODE.fullmatch(local_area_code)
    if area_known and _LOCAL_NUMBER.fullmatch(dialable):
        try:
            local = phonenumbers.parse(f"0{local_area_code}{dialable}", region)
        except phonenumbers.NumberParseException:
            return CallerNumber(text, None, INVALID)
        if phonenumbers.is_valid_number(local) and _kind(local, region) == LANDLINE:
            return CallerNumber(text, _e164(local), LANDLINE)
    return CallerNumber(text, None, INVALID)


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _kind(number: phonenumbers.PhoneNumber, region: str) -> str:
    if number.country_code != phonenumbers.country_code_for_region(region):
        return INTERNATIONAL
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.MOBILE:
        return MOBILE
    if number_type in _SERVICE_TYPES:
        return SERVICE
    return LANDLINE


def mask(number: CallerNumber | str | None) -> str:
    """A form of a caller number fit for logs: ``+86138****8000``; ``withheld`` for no number.

    Service numbers (110, 12345) are not personal and stay readable. Anything else keeps at most the
    country code, three leading and four trailing digits, and always hides at least four digits.
    """
    if isinstance(number, CallerNumber):
        if number.kind == WITHHELD:
            return WITHHELD
        if number.kind == SERVICE:
            return number.e164 or _only_digits(number.raw)
        text = number.e164 or number.raw
    else:
        text = number if isinstance(number, str) else ""
    text = text.strip()
    if text.lower() in WITHHELD_WORDS:
        return WITHHELD
    digits = _only_digits(text)
    if not digits:
        return INVALID
    if text.startswith("+"):
        country = _country_code(digits)
        return "+" + country + _mask_digits(digits[len(country):])
    return _mask_digits(digits)


def _only_digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _country_code(digits: str) -> str:
    for length in (1, 2, 3):
        if phonenumbers.region_code_for_country_code(int(digits[:length])) != phonenumbers.UNKNOWN_REGION:
            return digits[:length]
    return ""


def _mask_digits(digits: str) -> str:
    n = len(digits)
    if n <= 4:
        return "*" * n
    tail = 4 if n >= 8 else n - 4
    head = min(3, max(0, n - 8))
    return digits[:head] + "*" * (n - head - tail) + digits[n - tail:]
