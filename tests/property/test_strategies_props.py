"""The shipped Hypothesis strategies yield what they promise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from estim.device.profile import DeviceProfile
from estim.protocols.models import Protocol, ShapeKind
from estim.protocols.prescription import Prescription, resolve
from estim.safety.checks import Category, evaluate
from estim.testing import strategies as es


@given(es.protocols())
def test_protocols_are_valid_by_construction(protocol: Protocol) -> None:
    assert Protocol.model_validate(protocol.model_dump()) == protocol
    assert protocol.pulse.period_us >= protocol.pulse.shape.pulse_duration_us
    assert protocol.session_us >= protocol.minimum_session_us


@given(st.data())
def test_prescriptions_resolve_against_their_protocol(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols())
    prescription = data.draw(es.prescriptions(protocol))
    assert Prescription.model_validate(prescription.model_dump()) == prescription
    resolved = resolve(prescription, protocol)  # raises if it does not fit
    assert resolved.ceiling_ua <= protocol.amplitude.ceiling_ua
    assert resolved.step_ua <= protocol.amplitude.titration_step_ua


@given(st.data())
def test_profiles_for_can_deliver_the_protocol(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols())
    profile = data.draw(es.profiles_for(protocol))
    verdict = evaluate(
        protocol, protocol.amplitude.ceiling_ua, protocol.amplitude.titration_step_ua, profile
    )
    device_errors = [str(f) for f in verdict.errors if f.category is Category.DEVICE]
    assert device_errors == []


@given(es.device_profiles())
def test_device_profiles_are_valid(profile: DeviceProfile) -> None:
    assert DeviceProfile.model_validate(profile.model_dump()) == profile


@given(es.protocols(shapes=es.shapes(kinds=[ShapeKind.LONG_BIPHASIC_TRIANGULAR])))
def test_strategies_narrow(protocol: Protocol) -> None:
    assert protocol.pulse.shape.kind is ShapeKind.LONG_BIPHASIC_TRIANGULAR
    assert protocol.pulse.shape.is_long_pulse


@given(es.protocols(cycles=es.continuous_cycles(), max_session_min=2, adjustable=False))
def test_continuous_small_sessions(protocol: Protocol) -> None:
    assert protocol.cycle.mode == "continuous"
    assert protocol.session_duration_min <= 2
    assert protocol.adjustable == {}
