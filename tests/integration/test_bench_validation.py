"""Technician bench validation against the simulator: over a real pty, and in virtual time.

A healthy simulator of the profile passes every check; a device that is not what the
profile says fails the right check; the record binds profile hash, unit and technician
and refuses to vouch for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from estim.cli import main
from estim.clock import VirtualClock
from estim.device.base import DeviceIdentity
from estim.device.profile import DeviceProfile, builtin_profile, load_profile
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.device.wire.driver import WireStimulator
from estim.errors import InputError, PreflightBlocked
from estim.files import to_toml
from estim.validation.bench import BenchValidation
from estim.validation.record import (
    Outcome,
    ValidationRecord,
    check_record,
    load_record,
    record_problems,
    save_record,
)

PF2 = builtin_profile("estim-pf2")
LP1 = builtin_profile("estim-lp1")


def bench(
    profile: DeviceProfile,
    device: SimulatedDevice,
    url: str,
    *,
    clock: VirtualClock | None = None,
    prompt: object = None,
) -> ValidationRecord:
    stim = WireStimulator(profile, url, clock=clock, keepalive=clock is None, check_identity=False)
    stim.open()
    try:
        return BenchValidation(
            profile,
            stim,
            technician="A. Tech",
            port=url,
            prompt=prompt,  # type: ignore[arg-type]
        ).run()
    finally:
        stim.close()


def outcomes(record: ValidationRecord) -> dict[str, Outcome]:
    return {c.id: c.outcome for c in record.checks}


def variant(profile: DeviceProfile, tmp_path: Path, **changes: dict[str, object]) -> DeviceProfile:
    """A copy of ``profile`` with some table values changed, loaded like any file."""
    data = profile.model_dump(mode="python")
    for table, values in changes.items():
        data[table] = {**data[table], **values}
    path = tmp_path / "variant.toml"
    path.write_text(to_toml(type(profile).model_validate(data)), encoding="utf-8")
    return load_profile(path)


@pytest.fixture
def virtual() -> Iterator[tuple[SimulatedDevice, VirtualClock]]:
    clock = VirtualClock()
    with SimulatedDevice(PF2, clock=clock, seed=2) as device:
        yield device, clock


# --- over a real pty, real time -----------------------------------------------------------


@pytest.mark.pty
@pytest.mark.parametrize("profile", [PF2, LP1], ids=["estim-pf2", "estim-lp1"])
def test_a_healthy_simulator_passes_every_check_over_a_pty(
    profile: DeviceProfile, tmp_path: Path
) -> None:
    device = SimulatedDevice(profile, seed=1)
    with PtyServer(device) as server:
        record = bench(profile, device, server.path)
    assert record.passed, [(c.id, c.detail) for c in record.checks if c.outcome != Outcome.PASS]
    assert set(outcomes(record)) == {
        "identity",
        "amplitude-accuracy",
        "refuses-over-limit",
        "watchdog",
        "stop-latency",
        "open-circuit",
    }
    assert record.profile_sha256 == profile.sha256
    assert record.device.serial_number == "SIM000001"
    assert record.technician == "A. Tech"
    watchdog = record.check("watchdog")
    trip = next(m for m in watchdog.measurements if m.name == "silence to trip report")
    assert isinstance(trip.value, Decimal)
    assert trip.value >= profile.link.watchdog_timeout_ms  # never early
    path = save_record(record, tmp_path / "record.json")
    assert load_record(path) == record


@pytest.mark.pty
def test_the_cli_benches_a_device_on_a_pty_and_writes_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = SimulatedDevice(PF2, seed=9)
    out = tmp_path / "bench.json"
    with PtyServer(device) as server:
        code = main(
            [
                "profile",
                "bench",
                "estim-pf2",
                "--port",
                server.path,
                "--technician",
                "R. Smith",
                "--out",
                str(out),
                "--no-interactive",
            ]
        )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASSED" in printed
    assert "Watchdog" in printed
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["passed"] is True
    assert data["device"]["serial_number"] == "SIM000009"
    assert data["technician"] == "R. Smith"
    assert data["profile_sha256"] == PF2.sha256


@pytest.mark.pty
def test_the_cli_exits_1_when_the_profile_is_not_true(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims_more = variant(PF2, tmp_path, output={"amplitude_max_ma": Decimal(100)})
    device = SimulatedDevice(PF2)  # the real unit only does 90 mA
    with PtyServer(device) as server:
        code = main(
            [
                "profile",
                "bench",
                str(tmp_path / "variant.toml"),
                "--port",
                server.path,
                "--technician",
                "R. Smith",
                "--out",
                str(tmp_path / "r.json"),
                "--no-interactive",
            ]
        )
    assert code == 1
    assert "FAILED" in capsys.readouterr().out
    record = load_record(tmp_path / "r.json")
    assert not record.passed
    assert record.profile_sha256 == claims_more.sha256
    assert outcomes(record)["identity"] is Outcome.FAIL


def test_the_cli_reports_an_unreachable_port_as_a_device_error(tmp_path: Path) -> None:
    code = main(["profile", "bench", "estim-pf2", "--port", "/dev/estim-none", "--technician", "T"])
    assert code == 3


def test_the_cli_reports_a_missing_profile_as_invalid_input(tmp_path: Path) -> None:
    code = main(["profile", "bench", str(tmp_path / "nope.toml"), "--port", "sim"])
    assert code == 2


# --- in virtual time: devices that are not what the profile says --------------------------


def test_virtual_time_bench_passes_and_is_deterministic(
    virtual: tuple[SimulatedDevice, VirtualClock],
) -> None:
    device, clock = virtual
    record = bench(PF2, device, device.url, clock=clock)
    assert record.passed
    watchdog = record.check("watchdog")
    trip = next(m for m in watchdog.measurements if m.name == "silence to trip report")
    assert trip.value == Decimal("250.000")  # virtual time: exactly the declared timeout


def test_firmware_outside_the_range_fails_identity(tmp_path: Path) -> None:
    clock = VirtualClock()
    with SimulatedDevice(PF2, clock=clock, firmware="2.3") as device:
        record = bench(PF2, device, device.url, clock=clock)
    assert outcomes(record)["identity"] is Outcome.FAIL
    assert not record.passed


def test_a_tighter_tolerance_than_the_device_has_fails_accuracy(
    virtual: tuple[SimulatedDevice, VirtualClock], tmp_path: Path
) -> None:
    device, clock = virtual
    claims_precision = variant(
        PF2,
        tmp_path,
        measurement={"current_tolerance_ma": Decimal("0.01"), "current_tolerance_percent": 0},
    )
    record = bench(claims_precision, device, device.url, clock=clock)
    assert outcomes(record)["amplitude-accuracy"] is Outcome.FAIL
    assert outcomes(record)["refuses-over-limit"] is Outcome.PASS


def test_a_profile_claiming_a_shorter_watchdog_fails(tmp_path: Path) -> None:
    # The unit's watchdog is 400 ms; the profile promises 250 ms.
    slow = variant(PF2, tmp_path, link={"watchdog_timeout_ms": 400})
    clock = VirtualClock()
    with SimulatedDevice(slow, clock=clock) as device:
        record = bench(PF2, device, device.url, clock=clock)
    assert outcomes(record)["watchdog"] is Outcome.FAIL
    assert not device.hardware.any_output_on


def test_a_profile_with_wider_limits_than_the_unit_fails_the_refusal_check(
    tmp_path: Path,
) -> None:
    # The unit (LP-1 firmware limits, 300 ms phases) is benched with a profile that
    # claims shorter phases: the device accepts a "beyond the limit" phase width.
    narrow = variant(
        LP1, tmp_path, output={"phase_width_max_us": 1000}, identity={"model": "LP-1 long-pulse"}
    )
    clock = VirtualClock()
    with SimulatedDevice(LP1, clock=clock) as device:
        record = bench(narrow, device, device.url, clock=clock)
    assert outcomes(record)["refuses-over-limit"] is Outcome.FAIL
    assert not device.hardware.any_output_on


def test_a_real_device_is_prompted_for_the_open_circuit(tmp_path: Path) -> None:
    clock = VirtualClock()
    with SimulatedDevice(PF2, clock=clock) as device:
        device.personality.inject_fault = None  # looks like real hardware
        asked: list[str] = []

        def technician(text: str) -> bool:
            asked.append(text)
            device.inject("open:ch=1" if "Disconnect" in text else "close:ch=1")
            return True

        record = bench(PF2, device, device.url, clock=clock, prompt=technician)
        unattended = bench(PF2, device, device.url, clock=clock, prompt=None)
    assert record.passed
    assert len(asked) == 2
    method = record.check("open-circuit").measurements[0]
    assert method.text == "electrode lead pulled by the technician"
    assert outcomes(unattended)["open-circuit"] is Outcome.NOT_VERIFIED
    assert not unattended.passed


# --- the record vouches for one profile and one unit ---------------------------------------


def test_the_record_vouches_only_for_its_profile_and_unit(
    virtual: tuple[SimulatedDevice, VirtualClock], tmp_path: Path
) -> None:
    device, clock = virtual
    record = bench(PF2, device, device.url, clock=clock)
    unit = DeviceIdentity(
        model=PF2.identity.model,
        serial_number="SIM000002",
        firmware="1.0",
        protocol_version=1,
        capabilities=frozenset({"sim-fault-injection"}),  # the simulator it was made on
    )
    assert record.matches(PF2, unit)
    check_record(record, PF2, unit)
    other_unit = DeviceIdentity(
        model=PF2.identity.model, serial_number="SN-OTHER", firmware="1.0", protocol_version=1
    )
    assert any("serial" in p for p in record_problems(record, PF2, other_unit))
    edited = variant(PF2, tmp_path, link={"reply_timeout_ms": 90})
    assert any("profile changed" in p for p in record_problems(record, edited, unit))
    with pytest.raises(PreflightBlocked, match="estim profile bench"):
        check_record(None, PF2, unit)
    with pytest.raises(PreflightBlocked, match="firmware"):
        check_record(
            record,
            PF2,
            DeviceIdentity(PF2.identity.model, "SIM000002", "1.5", protocol_version=1),
        )


def test_records_are_never_overwritten_and_bad_files_are_refused(
    virtual: tuple[SimulatedDevice, VirtualClock], tmp_path: Path
) -> None:
    device, clock = virtual
    record = bench(PF2, device, device.url, clock=clock)
    path = save_record(record, tmp_path / "r.json")
    with pytest.raises(InputError, match="already there"):
        save_record(record, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["passed"] = not data["passed"]
    (tmp_path / "forged.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="passed must be true exactly when"):
        load_record(tmp_path / "forged.json")
    data["passed"] = record.passed
    data["spec_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="newer"):
        load_record(tmp_path / "future.json")
