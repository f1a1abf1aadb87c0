"""Static-check verdicts are monotonic in amplitude: a lower ceiling never fails more."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from estim.safety.checks import Severity, Verdict, evaluate
from estim.safety.limits import Limits
from estim.testing import strategies as es


def concerns(verdict: Verdict, *severities: Severity) -> set[tuple[str, str | None]]:
    return {(f.code, f.field) for f in verdict.results if f.severity in severities}


@given(st.data())
def test_lowering_the_ceiling_never_adds_a_finding(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(max_session_min=5))
    profile = data.draw(st.one_of(es.device_profiles(), es.profiles_for(protocol)))
    limits = data.draw(
        st.sampled_from([Limits(), Limits(long_pulse_as_warnings=False, session_max_min=20)])
    )
    high = data.draw(st.integers(0, 300_000))
    low = data.draw(st.integers(0, high))
    step = data.draw(st.integers(1, 2_000))
    at_high = evaluate(protocol, high, step, profile, limits)
    at_low = evaluate(protocol, low, step, profile, limits)
    assert concerns(at_low, Severity.ERROR) <= concerns(at_high, Severity.ERROR)
    blocking_or_ack = (Severity.ERROR, Severity.WARNING)
    assert concerns(at_low, *blocking_or_ack) <= concerns(at_high, *blocking_or_ack)
    assert at_low.exit_code <= at_high.exit_code
    if at_high.passed:
        assert at_low.passed
    if not at_high.needs_acknowledgement:
        assert not at_low.needs_acknowledgement


@given(st.data())
def test_zero_amplitude_leaves_only_amplitude_independent_findings(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(max_session_min=5))
    profile = data.draw(es.profiles_for(protocol))
    verdict = evaluate(protocol, 0, protocol.amplitude.titration_step_ua, profile)
    amplitude_checks = {
        "IEC_RMS_CURRENT",
        "IEC_ENERGY_PER_PULSE",
        "IEC_DC_COMPONENT",
        "IEC_CURRENT_DENSITY",
        "FDA_POWER_DENSITY",
        "DEVICE_COMPLIANCE",
        "DEVICE_AMPLITUDE",
    }
    assert not {f.code for f in verdict.findings} & amplitude_checks
