"""The RehaStim2 profile against estim's static checks: what it may and may not run.

- The denervation protocols (long pulses) are refused at check time, with the reason.
- Stress and urge stimulation is accepted in the library's 1 mA titration steps; a
  prescription asking for finer steps (0.5 mA) is refused (the device sets whole mA).
- Every check that runs on this device warns that the measured-vs-commanded and
  impedance interlocks cannot run on it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from estim.cli import main
from estim.device.profile import builtin_profile
from estim.protocols.catalog import get_protocol
from estim.protocols.models import Protocol
from estim.safety.checks import Severity, check, check_profile
from estim.testing.session import demo_prescription

REHASTIM2 = builtin_profile("hasomed-rehastim2")
NO_READBACK = {"DEVICE_NO_CURRENT_MEASUREMENT", "DEVICE_NO_IMPEDANCE_MEASUREMENT"}


def whole_ma_steps(protocol_id: str) -> Protocol:
    protocol = get_protocol(protocol_id)
    amplitude = protocol.amplitude.model_copy(update={"titration_step_ma": Decimal(1)})
    return protocol.model_copy(update={"amplitude": amplitude})


@pytest.mark.parametrize("protocol_id", ["complete-denervation", "partial-denervation-triangular"])
def test_long_pulse_protocols_are_refused(protocol_id: str) -> None:
    verdict = check(None, get_protocol(protocol_id), REHASTIM2)
    assert verdict.blocked
    assert verdict.exit_code == 2  # the device cannot deliver it
    errors = {f.code: f for f in verdict.errors}
    assert "DEVICE_LONG_PULSE" in errors
    assert "DEVICE_PHASE_WIDTH" in errors
    assert "long pulses" in errors["DEVICE_LONG_PULSE"].message


@pytest.mark.parametrize("protocol_id", ["stress", "urge", "mixed", "partial-denervation"])
def test_short_pulse_protocols_titrated_in_whole_ma_are_accepted(protocol_id: str) -> None:
    verdict = check(None, whole_ma_steps(protocol_id), REHASTIM2)
    assert not verdict.blocked, [str(f) for f in verdict.errors]
    assert verdict.codes(Severity.WARNING) >= NO_READBACK
    assert verdict.needs_acknowledgement


@pytest.mark.parametrize("protocol_id", ["stress", "urge"])
def test_library_protocols_as_shipped_are_accepted(protocol_id: str) -> None:
    verdict = check(None, get_protocol(protocol_id), REHASTIM2)
    assert not verdict.blocked, [str(f) for f in verdict.errors]


@pytest.mark.parametrize("protocol_id", ["stress", "urge"])
def test_half_ma_titration_steps_cannot_be_set_on_this_device(protocol_id: str) -> None:
    protocol = get_protocol(protocol_id)
    rx = demo_prescription(protocol, step_ma=Decimal("0.5"))
    verdict = check(rx, protocol, REHASTIM2)
    assert [f.code for f in verdict.errors] == ["DEVICE_STEP_RESOLUTION"]


def test_35_hz_is_delivered_on_the_half_millisecond_grid() -> None:
    verdict = check(None, whole_ma_steps("partial-denervation"), REHASTIM2)
    (rate,) = [f for f in verdict.infos if f.code == "DEVICE_RATE_RESOLUTION"]
    assert "delivered as 29000 us" in rate.message


def test_the_profile_itself_passes_the_profile_checks() -> None:
    verdict = check_profile(REHASTIM2)
    assert not verdict.blocked, [str(f) for f in verdict.errors]


def test_cli_refuses_denervation_on_the_rehastim2(capsys: pytest.CaptureFixture[str]) -> None:
    profile = "profiles/hasomed-rehastim2.toml"
    code = main(["protocol", "check", "complete-denervation", "--profile", profile])
    out = capsys.readouterr().out
    assert code == 2
    assert "DEVICE_LONG_PULSE" in out
    assert "measured-vs-commanded" in out
