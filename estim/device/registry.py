"""Drivers by wire-protocol name, so a new protocol needs no change to the controller.

A profile's ``link.wire_protocol`` names its driver. Backends are listed as import
paths and loaded on first use (python-can's ``BACKENDS`` idea), so importing estim does
not import every driver, and a third party can :func:`register` its own.
"""

from __future__ import annotations

import importlib
from typing import Any

from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile
from estim.errors import InputError

# wire_protocol name -> "module:ClassName"
BACKENDS: dict[str, str] = {
    "estim-wire/1": "estim.device.wire.driver:WireStimulator",
    "sciencemode2": "estim.device.sciencemode2.driver:ScienceMode2Stimulator",
}


def register(wire_protocol: str, target: str) -> None:
    """Add or replace a backend: ``target`` is ``"package.module:ClassName"``."""
    BACKENDS[wire_protocol] = target


def driver_class(wire_protocol: str) -> type[Stimulator]:
    try:
        target = BACKENDS[wire_protocol]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise InputError(f"no driver for wire protocol {wire_protocol!r}; known: {known}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Stimulator)):
        raise TypeError(f"{target} is not a Stimulator")
    return cls


def create_stimulator(profile: DeviceProfile, url: str, **options: Any) -> Stimulator:
    """A driver for ``profile`` on ``url`` (not yet opened); options go to the driver."""
    return driver_class(profile.link.wire_protocol)(profile, url, **options)
