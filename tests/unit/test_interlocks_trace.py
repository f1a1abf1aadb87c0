"""The hazard trace holds: every interlock has a test that trips it, and the doc says so."""

from __future__ import annotations

from pathlib import Path

from estim.safety.hazards import HAZARDS, find_trip_tests, generate
from estim.safety.interlocks import INTERLOCKS

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DOC = ROOT / "docs" / "safety" / "hazards.md"


def test_every_interlock_has_a_test_that_trips_it() -> None:
    tripped = {t.interlock_id for t in find_trip_tests(TESTS, ROOT)}
    missing = sorted(set(INTERLOCKS) - tripped)
    assert not missing, f"interlocks with no test marked @pytest.mark.trips(ID): {missing}"


def test_every_trips_marker_names_a_real_interlock() -> None:
    unknown = sorted({t.interlock_id for t in find_trip_tests(TESTS, ROOT)} - set(INTERLOCKS))
    assert not unknown, f"tests claim to trip interlocks that do not exist: {unknown}"


def test_every_hazard_is_controlled_by_some_interlock() -> None:
    controlled = {h for cls in INTERLOCKS.values() for h in cls.HAZARDS}
    assert {h.id for h in HAZARDS} <= controlled


def test_the_hazard_doc_names_every_interlock() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [i for i in INTERLOCKS if f"`{i}`" not in text]
    assert not missing, f"docs/safety/hazards.md misses {missing}"
    assert "**none**" not in text


def test_the_hazard_doc_is_what_the_code_and_tests_say() -> None:
    expected = generate(TESTS)
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/safety/hazards.md is stale: run `make diagram` "
        "(python -m estim.safety.hazards --out docs/safety/hazards.md)"
    )


def test_the_scanner_finds_markers_on_methods_and_functions(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_x.py").write_text(
        "import pytest\n"
        "@pytest.mark.trips('IL-A')\n"
        "def test_a():\n    pass\n"
        "class TestB:\n"
        "    @pytest.mark.trips('IL-B', 'IL-C')\n"
        "    def test_b(self):\n        pass\n"
        "def test_unmarked():\n    pass\n",
        encoding="utf-8",
    )
    found = {(t.interlock_id, t.test) for t in find_trip_tests(tests, tmp_path)}
    assert found == {("IL-A", "test_a"), ("IL-B", "TestB::test_b"), ("IL-C", "TestB::test_b")}
