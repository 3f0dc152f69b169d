"""`hotline numbers`: the pool of virtual numbers as an operator manages it, refusals in one line."""

from __future__ import annotations

import pytest

from tests.test_cli_departments import _refused
from virtual_numbers.broker import Broker

X1, X2 = "+8675526660001", "+8675526660002"


@pytest.fixture
def run(hotline_cli):
    assert hotline_cli("db", "upgrade").exit_code == 0
    return hotline_cli


def _bind_one(tmp_path) -> None:
    """A live binding on X1, made through the broker over the CLI's database."""
    from base.db import make_engine, make_session_factory
    from orders.departments import DepartmentStore
    from tests.test_virtual_numbers_broker import add_ticket

    engine = make_engine(f"sqlite:///{(tmp_path / 'hotline.db').resolve()}")
    try:
        factory = make_session_factory(engine)
        DepartmentStore(factory).create("water", "水务局", "Water")
        DepartmentStore(factory).add_phone("water", "+8675583330001")
        add_ticket(factory, "2026120100001")
        Broker(factory, None).bind("2026120100001", "+8613800138000", "water")
    finally:
        engine.dispose()


def test_numbers_are_added_listed_reserved_and_removed(run, tmp_path):
    added = run("numbers", "add", "075526660001")
    assert added.exit_code == 0 and added.output.splitlines() == [f"{X1}\tactive\t0 live binding(s)"]
    assert run("numbers", "add", X2).exit_code == 0
    assert run("numbers", "list").output.splitlines() == [
        f"{X1}\tactive\t0 live binding(s)", f"{X2}\tactive\t0 live binding(s)",
        "2 active, 0 reserved, 0 in use, 2 free; 0 live binding(s), 0 by extension"]
    _bind_one(tmp_path)
    bound = [line for line in run("numbers", "list").output.splitlines() if line.endswith("\t1 live binding(s)")]
    assert len(bound) == 1
    busy = bound[0].split("\t")[0]
    _refused(run("numbers", "remove", busy), busy, "live binding", "reserve")
    reserved = run("numbers", "reserve", busy)
    assert reserved.exit_code == 0 and reserved.output.split("\t")[1] == "reserved"
    free = ({X1, X2} - {busy}).pop()
    removed = run("numbers", "remove", free)
    assert removed.exit_code == 0 and removed.output.split("\t")[1] == "removed"
    listing = run("numbers", "list").output.splitlines()
    assert [line.split("\t")[:2] for line in listing[:-1]] == [[busy, "reserved"]]
    assert listing[-1] == "0 active, 1 reserved, 1 in use, 0 free; 1 live binding(s), 0 by extension"
    states = {busy: "reserved", free: "removed"}
    assert [line.split("\t")[:2] for line in run("numbers", "list", "--all").output.splitlines()[:-1]] == [
        [x, states[x]] for x in (X1, X2)]
    assert run("numbers", "add", free).output.split("\t")[1] == "active"  # back in service


@pytest.mark.parametrize("args,words", [
    (("add", "not a number"), ("number",)),
    (("reserve", "+8675526669999"), ("not in the pool",)),
    (("remove", "+8675526669999"), ("not in the pool",)),
])
def test_mistakes_are_one_line(run, args, words):
    _refused(run("numbers", *args), *words)
