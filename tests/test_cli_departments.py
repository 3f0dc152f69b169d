"""`hotline departments`, `hotline catalogue` and department tokens, as an operator uses them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest


EXAMPLE = Path(__file__).resolve().parent.parent / "orders" / "catalogue.example.toml"


@pytest.fixture
def run(hotline_cli):
    assert hotline_cli("db", "upgrade").exit_code == 0
    return hotline_cli


def _refused(result, *words: str) -> None:
    """Exit 1 with one 'Error:' line naming ``words``, never a traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for word in words:
        assert word in lines[0]


def test_departments_are_added_and_listed(run):
    added = run("departments", "add", "water", "--zh", "海口市水务局", "--en", "Haikou Water Authority")
    assert added.exit_code == 0
    assert added.output.splitlines() == ["water\t海口市水务局\tHaikou Water Authority\t-\tactive\t-"]
    run("departments", "add", "city-management", "--zh", "综合行政执法局", "--en", "City Management")
    child = run("departments", "add", "longhua-cm", "--zh", "龙华区", "--en", "Longhua", "--parent", "city-management")
    assert child.exit_code == 0
    assert [line.split("\t")[:4] for line in run("departments", "list").output.splitlines()] == [
        ["city-management", "综合行政执法局", "City Management", "-"],
        ["longhua-cm", "龙华区", "Longhua", "city-management"],
        ["water", "海口市水务局", "Haikou Water Authority", "-"],
    ]


@pytest.mark.parametrize("args,words", [
    (("water", "--zh", "x", "--en", "y"), ("water", "exists")),
    (("Water Co", "--zh", "x", "--en", "y"), ("code",)),
    (("roads", "--zh", " ", "--en", "y"), ("name_zh",)),
    (("roads", "--zh", "x", "--en", "y", "--parent", "nobody"), ("nobody",)),
])
def test_department_mistakes_are_one_line(run, args, words):
    run("departments", "add", "water", "--zh", "水务局", "--en", "Water")
    _refused(run("departments", "add", *args), *words)


def test_phones_are_added_and_removed(run):
    run("departments", "add", "water", "--zh", "水务局", "--en", "Water")
    added = run("departments", "phone", "add", "water", "0898-66123456", "--label", "duty desk")
    assert added.exit_code == 0 and added.output.split("\t")[-1].strip() == "+8689866123456"
    assert run("departments", "list").output.split("\t")[-1].strip() == "+8689866123456"
    removed = run("departments", "phone", "remove", "water", "+8689866123456")
    assert removed.exit_code == 0 and removed.output.split("\t")[-1].strip() == "-"
    _refused(run("departments", "phone", "add", "water", "12"), "phone")
    _refused(run("departments", "phone", "add", "nobody", "0898-66123456"), "nobody")


def _example_departments() -> list[list[str]]:
    """The `hotline departments add ...` lines of the example catalogue's header, as arguments."""
    lines = re.findall(r"^#\s+hotline (departments add .+)$", EXAMPLE.read_text(encoding="utf-8"), re.M)
    assert lines
    return [shlex.split(line) for line in lines]


def test_the_example_catalogue_loads_after_its_departments(run):
    for args in _example_departments():
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
    loaded = run("catalogue", "load", str(EXAMPLE))
    assert loaded.exit_code == 0
    count = int(loaded.output.split()[0])
    rules = [line.split("\t") for line in run("catalogue", "list").output.splitlines()]
    assert len(rules) == count
    categories = {rule[0] for rule in rules}
    assert {"general", "urgent", "traffic", "water", "power", "noise"} <= categories
    assert ["noise", "longhua", "complaint", "longhua-city-management", "environment", "15"] in rules
    assert ["water", "*", "help", "water", "-", "5"] in rules


def test_catalogue_mistakes_are_one_line_and_change_nothing(run, tmp_path):
    run("departments", "add", "water", "--zh", "水务局", "--en", "Water")
    good = tmp_path / "good.toml"
    good.write_text('[[rule]]\ncategory = "water"\nlead = "water"\n', encoding="utf-8")
    assert run("catalogue", "load", str(good)).exit_code == 0
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[rule]]\ncategory = "water"\nlead = "water"\n[[rule]]\ncategory = "noise"\nlead = "police"\n',
                       encoding="utf-8")
    _refused(run("catalogue", "load", str(unknown)), "rule 2", "police")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rule]\n", encoding="utf-8")
    _refused(run("catalogue", "load", str(broken)), "TOML")
    _refused(run("catalogue", "load", str(tmp_path / "missing.toml")), "missing.toml")
    assert run("catalogue", "list").output.splitlines() == ["water\t*\thelp\twater\t-\t10"]


def test_a_department_token_names_a_known_department(run):
    # Before any department is kept in the database, the name is taken as given (older installations).
    assert run("token", "create", "--name", "early", "--role", "department", "--department", "water").exit_code == 0
    run("departments", "add", "water", "--zh", "水务局", "--en", "Water")
    _refused(run("token", "create", "--name", "typo", "--role", "department", "--department", "watre"),
             "watre", "water")
    made = run("token", "create", "--name", "water-desk", "--role", "department", "--department", "water")
    assert made.exit_code == 0 and made.output.startswith("hl_")
    assert [line.split("\t")[0] for line in run("token", "list").output.splitlines()] == ["early", "water-desk"]
    assert run("token", "create", "--name", "sup", "--role", "supervisor").exit_code == 0
