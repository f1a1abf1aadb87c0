"""Shared test configuration: Hypothesis profiles and the safe-state guards.

Profiles: ``ci`` (thorough, the default of ``make test``) and ``dev`` (quick, for the
edit-test loop: ``make test-fast`` or ``pytest --hypothesis-profile=dev``).
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dev")


SITE_ENVIRONMENT = ("ESTIM_DB", "ESTIM_LIMITS")
"""A developer's or CI machine's own settings must not reach the commands under test."""


@pytest.fixture(autouse=True)
def no_site_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SITE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> object:
    """Every test must stop the threads it started (reader threads, simulators...)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"
