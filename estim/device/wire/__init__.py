"""estim-wire/1: estim's open wire protocol for safe stimulators (docs/wire-protocol.md).

- :mod:`~estim.device.wire.codec`: framing (COBS, CRC-16/IBM-3740), incremental decoder.
- :mod:`~estim.device.wire.messages`: command codes, error codes, payload layouts.
- :mod:`~estim.device.wire.driver`: :class:`WireStimulator`, the host-side serial driver.
- :mod:`~estim.device.wire.personality`: the device side, for the simulator.
"""
