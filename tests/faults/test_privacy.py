"""(f) Privacy under faults: no log line of any process holds a caller's number, in any format, even while
the database is down and ticket writes fail and retry; a caller who withheld their number gets a
confidential ticket.

Spaced forms (``+86 139 0777 0001``) are out of scope: the checks look for the digits as one run.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.hotline_proc import (PlannedCall, caller_formats, check_invariants, new_uniqueid, plan_calls,
                                      read_tickets, run_calls)
from tests.faults.scenario import SETTLE_TIMEOUT, start_hotline

pytestmark = pytest.mark.faults

DOWN_AFTER_CALLS = 3.0  # seconds the database stays down after the last call (the first attempts fail)


def number_forms(e164: str) -> list[str]:
    """Every way a Chinese number may be written without spaces: E.164, without '+', national, local."""
    assert e164.startswith("+86"), e164
    national = e164[3:]
    forms = [e164, e164[1:]]
    if national.startswith("1"):  # a mobile: 13907770001
        forms.append(national)
    else:  # a landline: 898 66670004 -> 089866670004 and 66670004
        area = national[:3] if national[:2] not in ("10", "20", "21", "22", "23", "24", "25", "27", "28", "29") \
            else national[:2]
        forms += ["0" + national, national[len(area):]]
    return forms


def _restricted_calls(start: int, count: int) -> list[PlannedCall]:
    """Callers who withheld their number: agi_callingpres 32, the real number still in agi_callerid."""
    calls = []
    for i in range(count):
        n = start + i
        mobile = f"1376655{n % 10000:04d}"
        calls.append(PlannedCall(index=n, number=mobile if i % 2 else "+86" + mobile, e164="+86" + mobile,
                                 keys=["1", "1"], uniqueid=new_uniqueid(), restricted=True))
    return calls


def test_no_log_line_of_any_process_holds_a_callers_number_while_the_database_is_down(hotline, pg):
    running = start_hotline(hotline)
    calls = plan_calls(30, start=200, hangup_every=6) + _restricted_calls(300, 4)
    pg.kill()
    try:
        results = run_calls(hotline.agi_port, calls, threads=6)
        # Deferred writes fail while the database is down; RQ's first retry comes 5 s after the first attempt.
        time.sleep(DOWN_AFTER_CALLS)
    finally:
        pg.start()
    check_invariants(pg.url, results, planned=len(calls), known=running.warmup, timeout=SETTLE_TIMEOUT)

    forms = {}  # every form of every caller's number (the warm-up callers' too) -> its E.164 form
    for e164 in [c.e164 for c in calls] + [caller_formats(i)[1] for i in range(9000, 9003)]:
        for form in number_forms(e164):
            forms[form] = e164
    lines = hotline.log_lines()
    assert lines, "no log line at all was captured"
    leaks = []
    for name, line in lines:
        for form in forms:
            at = line.find(form)
            if at >= 0:
                leaks.append(f"{name}: {form!r} in ...{line[max(0, at - 200):at + 40]}... (line starts "
                             f"{line[:160]})")
                break
    assert not leaks, f"{len(leaks)} log lines hold a caller's number:\n" + "\n".join(leaks[:10])


def test_a_caller_who_withheld_their_number_gets_a_confidential_ticket(hotline, pg):
    running = start_hotline(hotline, worker=False)
    withheld = _restricted_calls(400, 2)
    shown = plan_calls(2, start=410)
    results = run_calls(hotline.agi_port, withheld + shown, threads=2)
    check_invariants(pg.url, results, planned=4, known=running.warmup, timeout=SETTLE_TIMEOUT)
    tickets = read_tickets(pg.url)
    confidential = {r.call.number: tickets[r.ticket].confidential for r in results}
    assert confidential == {**{c.number: True for c in withheld}, **{c.number: False for c in shown}}, (
        "agi_callingpres 32 (presentation restricted) must make the ticket confidential: " + repr(confidential))
