"""Technician bench validation of a device profile on one device unit.

- :mod:`~estim.validation.bench`: the checks (:class:`BenchValidation`).
- :mod:`~estim.validation.record`: the validation record (frozen, JSON, SHA-256 bound)
  that sessions require before they use a device.
"""

from estim.validation.record import (
    CheckResult,
    DeviceUnit,
    Measurement,
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
    "Outcome",
    "ValidationRecord",
    "check_record",
    "load_record",
    "record_problems",
    "save_record",
]
