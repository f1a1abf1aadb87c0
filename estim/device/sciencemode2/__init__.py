"""ScienceMode2: the serial protocol of the Hasomed RehaStim2 8-channel stimulator.

:mod:`.codec` frames bytes (start/stop bytes, escaping, CRC-8, length), :mod:`.messages`
turns frames into typed commands and back, :mod:`.driver` is the
:class:`~estim.device.base.Stimulator` backend the registry maps ``"sciencemode2"`` to,
and :mod:`.personality` is the device side the simulator serves. The facts these follow,
and where the public sources disagree, are in ``docs/devices/rehastim2.md``.
"""
