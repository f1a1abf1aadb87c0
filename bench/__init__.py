"""``make bench``: estim's timing figures, measured, printed and written to build/bench.json.

How the harness works (and how to add figures):

- Every module ``bench/<name>.py`` (other than ``__main__``) may define functions named
  ``figure_*``. Each takes a :class:`BenchContext` and returns a list of
  :class:`Figure`. ``python -m bench`` imports the modules in name order, runs their
  figure functions in definition order, prints one table, writes every figure to
  ``build/bench.json`` and exits 1 if any figure misses its target.
- Build figures from raw samples with :func:`figure_from_ns` (samples in nanoseconds
  from :func:`time.monotonic_ns`); it computes p50/p99/max in milliseconds and judges
  the target against the statistic you name (``"p99"`` by default).
- ``context.quick`` asks for fewer trials (``python -m bench --quick``), for a smoke run.
- Keep measurement code here, not in tests: tests never assert on timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from estim.device.base import ChannelConfig, Stimulator
    from estim.device.profile import DeviceProfile
    from estim.device.simulator import SimulatedDevice

Driver = TypeVar("Driver", bound="Stimulator")

NS_PER_MS = 1_000_000

Stat = Literal["p50", "p99", "max"]


@dataclass(frozen=True)
class BenchContext:
    quick: bool = False

    def trials(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Figure:
    """One measured figure, in milliseconds."""

    name: str
    p50: float
    p99: float
    max: float
    n: int
    unit: str = "ms"
    target: float | None = None  # upper bound on ``target_stat``
    target_stat: Stat = "p99"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        value: float = getattr(self, self.target_stat)
        return value <= self.target

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "unit": self.unit,
            "p50": round(self.p50, 4),
            "p99": round(self.p99, 4),
            "max": round(self.max, 4),
            "n": self.n,
        }
        if self.target is not None:
            data["target"] = self.target
            data["target_stat"] = self.target_stat
            data["pass"] = self.passed
        if self.note:
            data["note"] = self.note
        data.update(self.extra)
        return data


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (p99 of 200 = the 198th)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def figure_from_ns(
    name: str,
    samples_ns: Sequence[int],
    *,
    target_ms: float | None = None,
    target_stat: Stat = "p99",
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Figure:
    return figure_from_values(
        name,
        [s / NS_PER_MS for s in samples_ns],
        target=target_ms,
        target_stat=target_stat,
        note=note,
        extra=extra,
    )


def figure_from_values(
    name: str,
    values: Sequence[float],
    *,
    unit: str = "ms",
    target: float | None = None,
    target_stat: Stat = "p99",
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Figure:
    """p50 / p99 / max of ``values`` (already in ``unit``)."""
    ordered = sorted(values)
    return Figure(
        name=name,
        p50=percentile(ordered, 0.50),
        p99=percentile(ordered, 0.99),
        max=ordered[-1],
        n=len(ordered),
        unit=unit,
        target=target,
        target_stat=target_stat,
        note=note,
        extra=extra or {},
    )


FigureFunction = Callable[[BenchContext], list[Figure]]


@contextmanager
def pty_device(
    profile: DeviceProfile,
    driver_class: Callable[..., Driver],
    config: ChannelConfig,
) -> Iterator[tuple[SimulatedDevice, Driver]]:
    """The simulator for ``profile`` on a pty, and an opened driver configured with
    ``config`` on channel 1 (closed again afterwards); no keepalive thread."""
    from estim.device.simulator import PtyServer, SimulatedDevice

    device = SimulatedDevice(profile)
    with PtyServer(device) as server:
        driver = driver_class(profile, server.path, keepalive=False)
        driver.open()
        try:
            driver.configure([config])
            yield device, driver
        finally:
            driver.close()
