"""Caller numbers: the shapes Chinese networks and Asterisk hand us, and masking for logs."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orders.caller import CallerNumber, mask, normalise_caller

E164 = re.compile(r"\+[1-9][0-9]{1,14}")


@pytest.mark.parametrize(
    "raw",
    ["13800138000", "+8613800138000", "008613800138000", "8613800138000", "+86 138 0013 8000",
     "138-0013-8000", "013800138000"],  # the last: a mobile with the trunk 0 some landlines prepend
)
def test_chinese_mobile_forms(raw):
    assert normalise_caller(raw) == CallerNumber(raw, "+8613800138000", "mobile")


@pytest.mark.parametrize("raw", ["089866668888", "0898-6666-8888", "0898 66668888", "+8689866668888",
                                 "(0898) 6666 8888", "+86 0898 66668888"])
def test_landline_with_area_code(raw):
    assert normalise_caller(raw) == CallerNumber(raw, "+8689866668888", "landline")


def test_landline_of_another_city():
    assert normalise_caller("02066668888") == CallerNumber("02066668888", "+862066668888", "landline")


def test_landline_without_area_code_is_invalid_unless_the_local_area_code_is_known():
    assert normalise_caller("66668888") == CallerNumber("66668888", None, "invalid")
    assert normalise_caller("66668888", local_area_code="898") == CallerNumber("66668888", "+8689866668888", "landline")
    # a mobile is never mistaken for a local landline
    assert normalise_caller("13800138000", local_area_code="898").kind == "mobile"


@pytest.mark.parametrize("raw", ["110", "119", "120", "122", "12345", "12315", "95598", "10086", "96110"])
def test_short_service_numbers(raw):
    assert normalise_caller(raw) == CallerNumber(raw, None, "service")


def test_national_service_numbers_keep_their_e164_form():
    assert normalise_caller("4008123123") == CallerNumber("4008123123", "+864008123123", "service")


@pytest.mark.parametrize(
    "raw, e164",
    [("+14155550100", "+14155550100"), ("0014155550100", "+14155550100"), ("+85221234567", "+85221234567"),
     ("+447911123456", "+447911123456")],
)
def test_foreign_numbers_are_international(raw, e164):
    assert normalise_caller(raw) == CallerNumber(raw, e164, "international")


@pytest.mark.parametrize(
    "raw", [None, "", "  ", "unknown", "anonymous", "Anonymous", "ANONYMOUS", "restricted", "private",
            "Restricted", "withheld", "unavailable"],
)
def test_withheld(raw):
    number = normalise_caller(raw)
    assert (number.e164, number.kind, number.withheld) == (None, "withheld", True)


@pytest.mark.parametrize("raw", ["abc", "12;DROP", "1380013800", "+", "00", "+861", "1-800-FLOWERS", "１３８００１３８０００",
                                 "1" * 40, "+86110"])
def test_garbage_is_invalid(raw):
    number = normalise_caller(raw)
    assert (number.e164, number.kind) == (None, "invalid")


def test_raw_is_kept_storable():
    number = normalise_caller("138\x000013\n8000" + "9" * 100)
    assert "\x00" not in number.raw and "\n" not in number.raw
    assert len(number.raw) == 64
    assert normalise_caller(12345).kind == "withheld"  # not text at all: treated as no number


def test_mask():
    assert mask("+8613800138000") == "+86138****8000"
    assert mask(normalise_caller("13800138000")) == "+86138****8000"
    assert mask(normalise_caller("0898-6666-8888")) == "+86898****8888"
    assert mask("+14155550100") == "+141****0100"
    assert mask(normalise_caller(None)) == "withheld"
    assert mask("anonymous") == "withheld"
    assert mask(None) == "withheld"
    assert mask(normalise_caller("12345")) == "12345"  # the hotline's own number is not personal
    assert mask(normalise_caller("66668888")) == "****8888"
    assert mask("13800138000") == "138****8000"
    assert mask("abc") == "invalid"


@given(st.text(max_size=80))
@settings(max_examples=500)
def test_normalise_never_raises_and_e164_is_valid(text):
    number = normalise_caller(text)
    assert number.kind in {"mobile", "landline", "service", "international", "withheld", "invalid"}
    if number.e164 is not None:
        assert E164.fullmatch(number.e164)
        assert phonenumbers.is_valid_number(phonenumbers.parse(number.e164))
    else:
        assert number.kind in {"service", "withheld", "invalid"}


@given(st.from_regex(r"\A[+]?(00|0)?(86)?[0-9 \-]{0,16}\Z"), st.sampled_from([None, "898", "10", "x", 898, ""]))
@settings(max_examples=500)
def test_normalise_digit_strings(text, area):
    number = normalise_caller(text, local_area_code=area)
    if number.e164 is not None:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number.e164))


@given(st.from_regex(r"\A1[3-9][0-9]{9}\Z"))
def test_mask_hides_the_middle_of_every_mobile(raw):
    number = normalise_caller(raw)
    if number.e164:
        masked = mask(number)
        assert masked.count("*") == 4 and raw not in masked and number.e164 not in masked
