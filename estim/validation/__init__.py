"""Technician bench validation of a device profile on one device unit.

- :mod:`~estim.validation.bench`: the checks (:class:`BenchValidation`).
- :mod:`~estim.validation.current`: output-current test points and who measures them
  when the device cannot (technician, measurements file, simulator instrument).
- :mod:`~estim.validation.record`: the validation record (frozen, JSON, SHA-256 bound)
  that sessions require before they use a device.
"""

from estim.validation.record import (
    CheckResult,
    DeviceUnit,
    Measurement,
    MeasurementMethod,
    Outcome,
    ValidationRecord,
    check_record,
    load_record,
    record_problems,
    save_record,
)

__all__ = [
    "CheckResult",
    "DeviceUnit",
    "Measurement",
    "MeasurementMethod",
    "Outcome",
    "ValidationRecord",
    "check_record",
    "load_record",
    "record_problems",
    "save_record",
]
