"""agi://host/virtual over real sockets: a call to a virtual number put through without either side
learning the other's number, each outcome as the dialplan ([hotline-virtual]) sees it."""

from __future__ import annotations

import logging

import pytest

from agi_scripts.handlers.virtual import VirtualCall
from agi_scripts.simulator import Caller, SimulatedChannel, place_call
from base.db import make_engine, make_session_factory
from tests.orders_fixtures import unreachable_database_url
from tests.test_virtual_numbers_broker import (  # noqa: F401
    A,
    C,
    STRANGER,
    W1,
    W2,
    X1,
    X2,
    broker,
    clock,
    make_broker,
    world,
)
from virtual_numbers.broker import Broker


def forms(e164: str) -> list[str]:
    """The citizen's number as it could leak: E.164, with the country code, national, the last 8 digits."""
    national = e164[3:]
    return [e164, e164[1:], national, national[-8:], f"{national[:3]} {national[3:7]} {national[7:]}"]


@pytest.fixture
def serve(agi_handler_server):
    return lambda broker_: agi_handler_server("virtual", VirtualCall(broker=broker_))


def dial(address, caller: str, dialled: str, uniqueid: str, keys=(), script="virtual", variables=None):
    channel = SimulatedChannel(Caller(number=caller, dialled=dialled, uniqueid=uniqueid, keys=list(keys),
                                      script=script), *address)
    channel.variables.update(variables or {})
    return place_call(channel.caller, *address, timeout=20, channel=channel)


def sent_by_the_server(result) -> str:
    return "\n".join(line for line in result.transcript if line.startswith(">>> "))


def test_a_department_calls_the_citizen_without_seeing_the_number(broker, serve):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    address = serve(broker)
    leg = dial(address, W2, X1, "1764550000.1")
    assert (leg.variables["VIRTUAL_CALL"], leg.variables["VIRTUAL_CALLERID"], leg.variables["VIRTUAL_RECORD"]) == (
        "1764550000.1", X1, "0")
    assert "VIRTUAL_TARGET" not in leg.variables and "VIRTUAL_REFUSED" not in leg.variables
    for form in forms(A):  # nothing the server says on the department's leg holds the citizen's number
        assert form not in sent_by_the_server(leg)
    out = dial(address, X1, "1764550000.1", "1764550000.2", script="virtual?leg=out")
    assert out.variables["VIRTUAL_TARGET"] == A  # only the outgoing leg learns whom to dial
    end = dial(address, W2, X1, "1764550000.1", script="virtual?leg=end",
               variables={"VIRTUAL_CALL": "1764550000.1", "ANSWEREDTIME": "42",
                          "CHANNEL(hangupsource)": "PJSIP/carrier-00000001"})
    assert end.commands >= 1
    receipt = broker.receipts(department="water")[0]
    assert (receipt.call_id, receipt.outcome, receipt.hangup_by) == ("1764550000.1", "connected", "caller")
    assert receipt.answered_at is not None and receipt.ended_at is not None


def test_the_citizen_calls_back_and_reaches_the_department_that_called(broker, serve):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    address = serve(broker)
    dial(address, W2, X1, "1764550001.1")  # W2 called the citizen first
    back = dial(address, A, X1, "1764550001.2")
    assert back.variables["VIRTUAL_CALLERID"] == X1 and "VIRTUAL_REFUSED" not in back.variables
    out = dial(address, X1, "1764550001.2", "1764550001.3", script="virtual?leg=out")
    assert out.variables["VIRTUAL_TARGET"] == W2


@pytest.mark.parametrize("caller, dialled, reason", [
    (STRANGER, X1, "unknown_pair"),  # never put through on the dialled number alone
    ("", X1, "unknown_caller"),  # a withheld number
    (A, X2, "unknown_number"),  # not a number of the pool
])
def test_refusals_are_announced_and_nothing_is_dialled(broker, serve, caller, dialled, reason):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    leg = dial(serve(broker), caller, dialled, "1764550002.1")
    assert leg.variables.get("VIRTUAL_REFUSED") == reason
    assert "VIRTUAL_CALL" not in leg.variables and "VIRTUAL_TARGET" not in leg.variables


def test_a_direction_not_allowed_is_refused(broker, serve):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water", direction="to_citizen")
    leg = dial(serve(broker), A, X1, "1764550003.1")
    assert leg.variables.get("VIRTUAL_REFUSED") == "direction_not_allowed"


def test_the_outgoing_leg_of_an_unknown_or_old_call_dials_nothing(broker, serve, clock):  # noqa: F811
    broker.add_number(X1)
    broker.bind("2026120100001", A, "water")
    address = serve(broker)
    assert "VIRTUAL_TARGET" not in dial(address, X1, "1764559999.9", "1", script="virtual?leg=out").variables
    dial(address, W1, X1, "1764550004.1")
    clock.advance(minutes=5)  # the dialplan dials at once; a replayed call id later gets nothing
    assert "VIRTUAL_TARGET" not in dial(address, X1, "1764550004.1", "2", script="virtual?leg=out").variables


def test_extension_mode_asks_for_the_extension(world, redis_conn, redis_prefix, clock, serve):  # noqa: F811
    broker_ = make_broker(world, redis_conn, redis_prefix, clock)
    broker_.add_number(X1)
    first = broker_.bind("2026120100001", A, "water")
    second = broker_.bind("2026120100002", C, "water")  # water holds X1 already: extensions from here on
    third = broker_.bind("2026120100003", STRANGER, "water")
    assert (first.mode, second.mode, third.mode) == ("pair", "extension", "extension")
    broker_.revoke(first.id)  # now water reaches two citizens on X1, each behind an extension
    address = serve(broker_)
    leg = dial(address, W1, X1, "1764550005.1", keys=[second.extension])
    assert ">>> GET DATA hotline/enter-extension 8000 8" in leg.transcript
    assert leg.variables.get("VIRTUAL_CALL") == "1764550005.1"
    out = dial(address, X1, "1764550005.1", "1764550005.2", script="virtual?leg=out")
    assert out.variables.get("VIRTUAL_TARGET") == C
    wrong = dial(address, W1, X1, "1764550005.3", keys=["99999"])
    assert wrong.variables.get("VIRTUAL_REFUSED") == "unknown_extension"
    nothing = dial(address, W1, X1, "1764550005.4", keys=[""])
    assert "VIRTUAL_CALL" not in nothing.variables and nothing.variables.get("VIRTUAL_REFUSED")


def test_a_broken_backend_sets_nothing_so_the_dialplan_never_guesses(tmp_path, serve, caplog, database_url):
    engine = make_engine(unreachable_database_url(database_url, tmp_path), connect_timeout=1)
    try:
        broken = Broker(make_session_factory(engine), None)
        caplog.set_level(logging.ERROR)
        leg = dial(serve(broken), W1, X1, "1764550006.1")
    finally:
        engine.dispose()
    assert not any(name.startswith("VIRTUAL_") for name in leg.variables)
