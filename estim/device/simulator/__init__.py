"""The simulator: the device side of estim's wire protocols, as a real backend.

Layers (see docs/simulator.md):

- :class:`SimulatedStimulator` (``hardware``): protocol-neutral firmware and hardware
  model of the device a profile describes: channels, limits (refused, never clamped),
  load, compliance, measurement noise, watchdog, latched faults.
- :class:`Personality` (``personality``): the device side of one wire protocol,
  found by ``profile.link.wire_protocol`` in :data:`PERSONALITIES`.
- :class:`SimulatedDevice` (``device``): hardware + personality + link faults +
  scheduled faults + trace, transport-agnostic.
- Transports: :class:`PtyServer` (real time, a real ``/dev/pts/N``) and the
  in-process pyserial URL handler ``sim://`` (real or virtual time).
"""

from estim.device.simulator.device import (
    CloseReport,
    SimulatedDevice,
    find_device,
    open_devices,
    take_close_reports,
)
from estim.device.simulator.faults import (
    FAULT_HELP,
    FaultKind,
    FaultSpec,
    parse_fault,
    parse_faults,
)
from estim.device.simulator.hardware import (
    HardwareEvent,
    OutputState,
    Refusal,
    RefusalReason,
    SimulatedStimulator,
)
from estim.device.simulator.personality import (
    PERSONALITIES,
    Personality,
    personality_class,
    register_personality,
)
from estim.device.simulator.protocol_sim import enable_sim_urls
from estim.device.simulator.pty_server import PtyServer
from estim.device.simulator.trace import Trace, TraceRecord

enable_sim_urls()

__all__ = [
    "FAULT_HELP",
    "PERSONALITIES",
    "CloseReport",
    "FaultKind",
    "FaultSpec",
    "HardwareEvent",
    "OutputState",
    "Personality",
    "PtyServer",
    "Refusal",
    "RefusalReason",
    "SimulatedDevice",
    "SimulatedStimulator",
    "Trace",
    "TraceRecord",
    "enable_sim_urls",
    "find_device",
    "open_devices",
    "parse_fault",
    "parse_faults",
    "personality_class",
    "register_personality",
    "take_close_reports",
]
