"""The event-log story check, the plan, the summary figures and the runner's settings."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from estim.device.profile import builtin_profile
from estim.errors import InputError
from estim.events import SessionEvent
from estim.protocols.catalog import get_protocol
from estim.protocols.prescription import resolve
from estim.protocols.schedule import compile_schedule
from estim.safety.interlocks import DoseReading, FindingsReading
from estim.session.plan import SessionPlan, truncate_schedule
from estim.session.runner import RunnerSettings
from estim.session.story import check_story
from estim.session.summary import DeliveredCounter, Outcome
from estim.testing.session import demo_prescription, make_plan


def state_event(trigger: str, source: str, dest: str, t: int = 0) -> SessionEvent:
    return SessionEvent("state", dest, t, {"trigger": trigger, "from": source, "to": dest})


GOOD = [
    SessionEvent("session", "idle", 0),
    state_event("connect", "idle", "connecting", 1),
    state_event("preflight", "connecting", "preflight", 2),
    state_event("arm", "preflight", "armed", 3),
    state_event("amplitude_up", "armed", "titrating", 4),
    state_event("confirm_amplitude", "titrating", "armed", 5),
    state_event("start", "armed", "running", 6),
    SessionEvent("phase", "running", 7, {"segment": 0}),
    SessionEvent("phase", "running", 8, {"segment": 1}),
    state_event("trip", "running", "fault", 9),
    state_event("acknowledge_fault", "fault", "aborted", 10),
    SessionEvent("summary", "aborted", 11),
]


def test_a_consistent_story_passes() -> None:
    assert check_story(GOOD) == []


@pytest.mark.parametrize(
    ("index", "event", "expected"),
    [
        (2, state_event("arm", "connecting", "armed", 2), "not in the table"),
        (2, state_event("preflight", "idle", "preflight", 2), "machine was in connecting"),
        (8, SessionEvent("phase", "running", 8, {"segment": -1}), "went back"),
        (11, SessionEvent("summary", "running", 11), "machine was in aborted"),
        (3, SessionEvent("state", "armed", 3, {"trigger": "nonsense"}), "malformed"),
        (4, state_event("amplitude_up", "armed", "titrating", 0), "time went backwards"),
    ],
)
def test_each_kind_of_inconsistency_is_found(
    index: int, event: SessionEvent, expected: str
) -> None:
    story = list(GOOD)
    story[index] = event
    problems = check_story(story)
    assert problems
    assert any(expected in str(p) for p in problems), problems


def test_a_phase_outside_running_is_found() -> None:
    story = [*GOOD[:4], SessionEvent("phase", "armed", 4, {"segment": 0})]
    assert "phase event in state armed" in str(check_story(story)[0])


def test_a_forced_fault_from_anywhere_is_part_of_the_story() -> None:
    story = [
        state_event("connect", "idle", "connecting"),
        state_event("trip", "connecting", "fault"),
    ]
    assert check_story(story) == []


# --- plan ------------------------------------------------------------------------------


def test_plan_binds_every_ceiling_and_picks_the_lowest() -> None:
    plan = make_plan(max_ma=Decimal(30), step_ma=None)  # no step: the protocol's
    sources = {c.source: c.ua for c in plan.amplitude.ceilings}
    assert sources["patient prescription"] == 30_000
    assert sources["protocol stress"] == 50_000
    assert sources["device profile PF-2 pelvic NMES"] == 90_000
    assert plan.ceiling_ua == 30_000
    assert plan.step_ua == 1_000  # the protocol's step (largest allowed)
    assert plan.channels == (1,)
    assert plan.ramp_up_us == plan.ramp_down_us == 1_000_000
    assert make_plan(step_ma=Decimal("0.5")).step_ua == 500  # a finer prescribed step


def test_plan_refuses_a_step_the_device_cannot_set() -> None:
    protocol = get_protocol("stress")
    resolved = resolve(demo_prescription(protocol, step_ma=Decimal("0.25")), protocol)
    with pytest.raises(InputError, match="titration_step_ma"):
        SessionPlan.build(
            resolved,
            builtin_profile("estim-pf2"),
            findings=FindingsReading(),
            dose=DoseReading(0, 0),
        )


def test_plan_refuses_a_schedule_longer_than_prescribed() -> None:
    protocol = get_protocol("stress")
    resolved = resolve(demo_prescription(protocol), protocol)
    longer = dataclasses.replace(compile_schedule(resolved), duration_us=10**12)
    with pytest.raises(InputError, match="longer than the prescribed session"):
        SessionPlan.build(
            resolved,
            builtin_profile("estim-pf2"),
            findings=FindingsReading(),
            dose=DoseReading(0, 0),
            schedule=longer,
        )


def test_truncation_keeps_whole_cycles_only() -> None:
    protocol = get_protocol("stress")
    schedule = compile_schedule(resolve(demo_prescription(protocol), protocol))
    short = truncate_schedule(schedule, 3)
    assert short.cycles == 3
    assert short.duration_us == 3 * 17_000_000
    assert short.segments[-1].phase.value == "off"
    with pytest.raises(InputError):
        truncate_schedule(schedule, 0)
    with pytest.raises(InputError):
        truncate_schedule(schedule, schedule.cycles + 1)


def test_delivered_counts_stimulating_time_and_whole_plateaus() -> None:
    plan = make_plan(cycles=2)
    schedule = plan.schedule
    assert DeliveredCounter(schedule).at(0) == (0, 0)
    assert DeliveredCounter(schedule).at(3_000_000) == (3_000_000, 0)
    assert DeliveredCounter(schedule).at(6_000_000) == (6_000_000, 1)
    assert DeliveredCounter(schedule).at(17_000_000) == (7_000_000, 1)
    assert DeliveredCounter(schedule).at(schedule.duration_us) == (14_000_000, 2)


def test_outcomes_map_to_exit_codes() -> None:
    assert Outcome.COMPLETED.exit_code == 0
    assert Outcome.STOPPED.exit_code == 0
    assert Outcome.NOT_STARTED.exit_code == 0
    assert Outcome.EMERGENCY_STOP.exit_code == 4
    assert Outcome.FAULT.exit_code == 4


# --- settings ------------------------------------------------------------------------------


def test_settings_default_to_the_profiles_heartbeat() -> None:
    settings = RunnerSettings.for_plan(make_plan())
    assert settings.control_period_ns == 50_000_000
    assert settings.resume_ramp_us == 1_000_000
    assert settings.stop_ramp_us == 1_000_000


@pytest.mark.parametrize("period_ms", [0, 51, 1000])
def test_a_control_period_that_would_starve_the_watchdog_is_refused(period_ms: int) -> None:
    with pytest.raises(InputError, match="control period"):
        RunnerSettings.for_plan(make_plan(), control_period_ms=period_ms)
