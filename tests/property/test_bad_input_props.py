"""Every invalid file gets exit code 2 and a clear message, never a traceback.

Valid protocol, prescription and profile files are mutated at random (keys deleted,
unknown keys added, wrong types, out-of-range numbers, newer spec versions, truncated
or garbled text) and fed to the command line. Whatever the mutation: no traceback;
a file that does not load gets exit code 2 and a message naming the file; a file that
still loads gets 0 or 1 (or 2 when the device cannot deliver it), like any valid file.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import event, given, settings
from hypothesis import strategies as st

from estim.cli import main
from estim.device.profile import builtin_profile, load_profile
from estim.errors import EstimError
from estim.files import to_toml
from estim.protocols.catalog import get_protocol, load_prescription, load_protocol
from estim.protocols.prescription import Prescription, ProtocolRef

# Each example runs the whole command line (tens of ms): a third of the profile's
# examples keeps the suite fast while still covering every mutation kind.
MUTATIONS = settings(max_examples=max(20, settings.default.max_examples // 3))

WRONG_VALUES = st.one_of(
    st.just("text"),
    st.just(True),
    st.just([1, 2]),
    st.just({"nested": 1}),
    st.just(-1),
    st.just(0),
    st.just(10**9),
    st.just(Decimal("-0.5")),
    st.just(Decimal("1e-9")),
    st.just(""),
)


def leaf_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        paths = []
        for key, value in data.items():
            paths += leaf_paths(value, (*prefix, key)) or [(*prefix, key)]
        return paths
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return [p for i, item in enumerate(data) for p in leaf_paths(item, (*prefix, i))]
    return []


def table_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict):
                paths += table_paths(value, (*prefix, key))
    return paths


def at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def mutated_text(draw: st.DrawFn, data: dict[str, Any]) -> str:
    """The TOML of ``data`` after one or more random mutations."""
    data = _deep_copy(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "unknown", "wrong", "spec", "truncate", "garble"]))
        leaves = leaf_paths(data)
        if kind == "delete" and leaves:
            path = draw(st.sampled_from(leaves))
            del at(data, path[:-1])[path[-1]]
        elif kind == "unknown":
            table = at(data, draw(st.sampled_from(table_paths(data))))
            table[draw(st.sampled_from(["colour", "amplitude_max", "x_1", "Phase_Width"]))] = 1
        elif kind == "wrong" and leaves:
            path = draw(st.sampled_from(leaves))
            at(data, path[:-1])[path[-1]] = _deep_copy(draw(WRONG_VALUES))
        elif kind == "spec":
            data["spec_version"] = draw(st.integers(2, 99))
    text = tomli_w.dumps(data)
    if draw(st.booleans()) and kind in {"truncate", "garble"}:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + (
            draw(st.sampled_from(["[", "= =", '"', "\x00", "]]"])) if kind == "garble" else ""
        )
    return text


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def loads(loader: Callable[[Path], object], path: Path) -> bool:
    try:
        loader(path)
    except EstimError:
        return False
    return True


def assert_clean_outcome(path: Path, loader: Callable[[Path], object], *args: str) -> None:
    code, out, err = run_cli(*args)
    event(f"exit code {code}")
    assert "Traceback" not in out + err
    if loads(loader, path):
        assert code in {0, 1, 2}
    else:
        assert code == 2, (code, out, err)
        assert err.startswith("error: "), err
        assert str(path) in err
        for line in err.splitlines()[1:]:
            if line.startswith("  - "):
                assert str(path) in line  # every problem names the file


def protocol_data() -> dict[str, Any]:
    return get_protocol("stress").model_dump(mode="python", exclude_none=True)


@MUTATIONS
@given(mutated_text(protocol_data()))
def test_mutated_protocol_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "protocol.toml"
        path.write_text(text, encoding="utf-8")
        assert_clean_outcome(path, load_protocol, "protocol", "check", str(path))


def profile_data() -> dict[str, Any]:
    return builtin_profile("estim-pf2").model_dump(mode="python", exclude_none=True)


@MUTATIONS
@given(mutated_text(profile_data()))
def test_mutated_profile_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "device.toml"
        path.write_text(text, encoding="utf-8")
        assert_clean_outcome(path, load_profile, "profile", "check", str(path))
        assert_clean_outcome(
            path, load_profile, "protocol", "check", "stress", "--profile", str(path)
        )


def prescription_data() -> dict[str, Any]:
    stress = get_protocol("stress")
    rx = Prescription(
        patient_code="P-1",
        protocol=ProtocolRef.of(stress),
        max_amplitude_ma=Decimal(40),
        adjustments={"frequency_hz": Decimal(35)},  # type: ignore[dict-item]
        prescriber="Dr Test",
        start_date="2026-01-01",  # type: ignore[arg-type]
    )
    return tomllib.loads(to_toml(rx), parse_float=Decimal)


@MUTATIONS
@given(mutated_text(prescription_data()))
def test_mutated_prescription_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rx.toml"
        path.write_text(text, encoding="utf-8")
        code, out, err = run_cli("protocol", "check", "stress", "--prescription", str(path))
        assert "Traceback" not in out + err
        if not loads(load_prescription, path):
            assert code == 2
            assert str(path) in err
        else:
            assert code in {0, 1, 2}
            if code == 2:  # loads but does not fit the protocol: named, field by field
                assert str(path) in err
