"""``estim protocol``, ``estim profile`` and ``estim demo`` as a user runs them.

Through :func:`estim.cli.main` (captured output), and once through a real subprocess.
Every bad input must give exit code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from estim.cli import main
from estim.files import to_toml
from estim.protocols.catalog import get_protocol, library_dir
from estim.protocols.prescription import Prescription, ProtocolRef

STRESS_TOML = (library_dir() / "stress.toml").read_text(encoding="utf-8")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def prescription_file(tmp_path: Path, ceiling_ma: str = "40", **extra: object) -> str:
    stress = get_protocol("stress")
    rx = Prescription.model_validate(
        {
            "patient_code": "P-0042",
            "protocol": ProtocolRef.of(stress),
            "max_amplitude_ma": ceiling_ma,
            "prescriber": "J. Jansen",
            "start_date": "2026-01-12",
            **extra,
        }
    )
    return write(tmp_path, "rx.toml", to_toml(rx))


# --- list / show ---------------------------------------------------------------------


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "list")
    assert code == 0
    for protocol_id in ("complete-denervation", "stress", "urge", "mixed", "partial-denervation"):
        assert protocol_id in out
    assert "[C2]" in out  # citations print as written, not eaten as markup


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "list", "--json")
    assert code == 0
    items = json.loads(out)
    assert {item["id"] for item in items} >= {"stress", "urge"}
    assert all(len(item["sha256"]) == 64 for item in items)


def test_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "show", "stress")
    assert code == 0
    assert "50 Hz" in out
    assert get_protocol("stress").content_hash in out
    assert "8.66 mA rms" in out  # dose at the 50 mA ceiling


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "show", "complete-denervation", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["protocol"]["pulse"]["shape"]["phase_width_us"] == 75_000
    assert data["dose_at_ceiling"]["pulses"] == 1400


def test_show_unknown_id(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "protocol", "show", "strees")
    assert code == 2
    assert "no protocol 'strees' in the library" in err
    assert "stress" in err


# --- check ---------------------------------------------------------------------------


def test_check_library_protocol_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "check", "stress")
    assert code == 0
    assert "PASS" in out
    assert "r.m.s. current" in out


def test_check_long_pulse_on_standard_device_cannot_deliver(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "protocol", "check", "complete-denervation")
    assert code == 2
    assert "CANNOT DELIVER" in out
    assert "DEVICE_LONG_PULSE" in out
    assert "estim-lp1" in out


def test_check_long_pulse_on_long_pulse_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "protocol", "check", "complete-denervation", "--profile", "estim-lp1"
    )
    assert code == 0
    assert "ACKNOWLEDGE" in out
    assert "750 mJ" in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "protocol", "check", "complete-denervation", "--profile", "estim-lp1", "--json"
    )
    assert code == 0
    verdict = json.loads(out)
    assert verdict["needs_acknowledgement"] is True
    codes = {f["code"] for f in verdict["findings"]}
    assert codes == {"DEVICE_COMPLIANCE", "IEC_ENERGY_PER_PULSE", "LONG_PULSE_REGIME"}
    assert verdict["dose"]["energy_per_pulse_mj"] == pytest.approx(750)


def test_check_unsafe_protocol_file_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "long.toml",
        STRESS_TOML.replace("session_duration_min = 20", "session_duration_min = 31").replace(
            "session_duration_min = { min = 15, max = 30 }",
            "session_duration_min = { min = 15, max = 31 }",
        ),
    )
    code, out, _ = run(capsys, "protocol", "check", path)
    assert code == 1
    assert "BLOCKED" in out
    assert "SESSION_MAX" in out


def test_check_prescription(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rx = prescription_file(tmp_path, "35", adjustments={"frequency_hz": "35"})
    code, out, _ = run(capsys, "protocol", "check", "--prescription", rx)
    assert code == 0
    assert "stress v2 at 35 mA" in out
    code, out, _ = run(capsys, "protocol", "check", "stress", "--prescription", rx, "--json")
    assert json.loads(out)["details"]["ceiling_ma"] == "35"


def test_check_prescription_that_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rx = prescription_file(tmp_path, "60", adjustments={"off_s": "2"})
    code, _out, err = run(capsys, "protocol", "check", "--prescription", rx)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 2  # one line per problem
    assert f"{rx}: max_amplitude_ma" in lines[0]
    assert "got 60" in lines[0]
    assert "limit <= 50 mA (stress)" in lines[0]
    assert "fix: prescribe at most 50 mA" in lines[0]
    assert f"{rx}: adjustments.off_s" in lines[1]


def test_check_prescription_against_other_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rx = prescription_file(tmp_path)
    code, _, err = run(capsys, "protocol", "check", "urge", "--prescription", rx)
    assert code == 2
    assert "prescription names a different protocol" in err


def test_check_needs_a_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "protocol", "check")
    assert code == 2
    assert "name a protocol" in err


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("[cycle]", "[cycle"), "not valid TOML"),
        (
            lambda t: t.replace("channels = 1", "channels = 1\ncolour = 'blue'"),
            "colour: Extra inputs",
        ),
        (
            lambda t: t.replace("channels = 1", "channels = 'one'"),
            "channels: Input should be a valid integer",
        ),
        (
            lambda t: t.replace("channels = 1", "channels = 99"),
            "channels: Input should be less than or equal to 8",
        ),
        (
            lambda t: t.replace("phase_width_us = 300", "phase_width_us = -3"),
            "pulse.shape.phase_width_us",
        ),
        (
            lambda t: t.replace("spec_version = 1", "spec_version = 7"),
            "newer than this estim understands",
        ),
        (
            lambda t: t.replace('kind = "symmetric_biphasic"', 'kind = "sawtooth"'),
            "does not match any of the expected tags",
        ),
        (
            lambda t: t.replace("frequency_hz = 50", "frequency_hz = 50\npulse_interval_ms = 20"),
            "exactly one of frequency_hz",
        ),
        (lambda t: t.replace("on_s = 5.0", "on_s = 5.0000001"), "not a whole number of us"),
    ],
)
def test_check_bad_protocol_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object, expected: str
) -> None:
    assert callable(edit)
    path = write(tmp_path, "bad.toml", edit(STRESS_TOML))
    code, _, err = run(capsys, "protocol", "check", path)
    assert code == 2
    assert path in err
    assert expected in err
    assert "<ShapeKind" not in err  # enum values as typed, not their repr


def test_check_missing_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "protocol", "check", str(tmp_path / "nope.toml"))
    assert (code, "no such file" in err) == (2, True)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run(capsys, "protocol", "check", str(binary))
    assert (code, "not UTF-8" in err) == (2, True)
    code, _, err = run(capsys, "protocol", "check", str(tmp_path))
    assert code == 2


def test_check_bad_profile_and_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_profile = write(tmp_path, "dev.toml", "spec_version = 1\n[identity]\nmanufacturer = 'x'\n")
    code, _, err = run(capsys, "protocol", "check", "stress", "--profile", bad_profile)
    assert code == 2
    assert f"{bad_profile}: link: Field required" in err
    code, _, err = run(capsys, "protocol", "check", "stress", "--profile", "estim-zz9")
    assert code == 2
    assert "estim-pf2" in err  # lists the known profiles
    limits = write(tmp_path, "limits.toml", "session_max_min = 0\n")
    code, _, err = run(capsys, "protocol", "check", "stress", "--limits", limits)
    assert code == 2
    assert "session_max_min" in err


def test_check_with_site_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    limits = write(tmp_path, "limits.toml", "session_max_min = 15\n")
    code, out, _ = run(capsys, "protocol", "check", "stress", "--limits", limits, "--no-passes")
    assert code == 1  # 20 min sessions now above the site's 15 min cap
    assert "SESSION_MAX" in out
    assert "LIMIT_OVERRIDDEN" in out


# --- schedule / schema ---------------------------------------------------------------


def test_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "schedule", "stress", "--cycles", "2")
    assert code == 0
    assert "70 cycle(s)" in out
    assert "ramp up" in out
    assert "68 more cycle(s)" in out


def test_schedule_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "schedule", "urge", "--json", "--profile", "estim-pf2")
    assert code == 0
    data = json.loads(out)
    assert [s["phase"] for s in data["schedule"]["segments"]] == ["ramp_up", "on", "ramp_down"]
    assert data["dose"]["smallest_contact_cm2"] == "3.4"
    assert data["protocol"]["id"] == "urge"


def test_schedule_of_prescription(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rx = prescription_file(tmp_path, adjustments={"off_s": "20"})
    code, out, _ = run(capsys, "protocol", "schedule", "--prescription", rx, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schedule"]["cycles"] == 44  # 27 s cycles: floor(1200 / 27)
    assert data["dose"]["ceiling_ua"] == 40_000


def test_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "schema")
    assert code == 0
    assert set(json.loads(out)) == {"protocol", "prescription", "device-profile", "limits"}
    code, out, _ = run(capsys, "protocol", "schema", "--out", str(tmp_path / "s"))
    assert code == 0
    assert (tmp_path / "s" / "protocol.schema.json").is_file()


# --- profile -------------------------------------------------------------------------


def test_profile_check_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "check", "estim-pf2")
    assert code == 0
    assert "PF-2" in out
    code, out, _ = run(capsys, "profile", "check", "estim-lp1", "--json")
    assert code == 0
    warnings = {f["code"] for f in json.loads(out)["findings"] if f["severity"] == "warning"}
    assert "PROFILE_RMS_CAPABILITY" in warnings


def test_profile_check_file_with_blocking_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        Path(__file__).resolve().parents[2] / "estim/device/profiles/estim-pf2.toml"
    ).read_text()
    path = write(tmp_path, "leaky.toml", text.replace("normal_ua = 10", "normal_ua = 150"))
    code, out, _ = run(capsys, "profile", "check", path)
    assert code == 1
    assert "PROFILE_LEAKAGE" in out


def test_profile_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        Path(__file__).resolve().parents[2] / "estim/device/profiles/estim-pf2.toml"
    ).read_text()
    path = write(tmp_path, "bad.toml", text.replace("spec_version = 1", "spec_version = 2"))
    code, _, err = run(capsys, "profile", "check", path)
    assert code == 2
    assert "device profile spec_version 2 is newer" in err
    path = write(tmp_path, "bad2.toml", text.replace("channels = 2", "channels = 0"))
    code, _, err = run(capsys, "profile", "check", path)
    assert code == 2
    assert f"{path}: output.channels" in err


def test_profile_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "list")
    assert code == 0
    assert "estim-pf2" in out
    assert "estim-lp1" in out


# --- a real process --------------------------------------------------------------------


def _estim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from estim.cli import run; sys.argv[0] = 'estim'; run()",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_subprocess_bad_file_and_good_check(tmp_path: Path) -> None:
    bad = write(
        tmp_path, "bad.toml", STRESS_TOML.replace("channels = 1", "channels = 'x'\nfoo = 1")
    )
    result = _estim("protocol", "check", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: channels" in result.stderr
    assert f"{bad}: foo" in result.stderr
    result = _estim("protocol", "check", "complete-denervation", "--profile", "estim-lp1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 0
