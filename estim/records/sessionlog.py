"""What a session's log must say, checked without a database.

The session header (the fields its chain is anchored to), the events the records
store writes itself, where a log names the device, and :func:`verify_session`: the
chain, the header, the device and the end of the log against the session row.
"""

from __future__ import annotations

from typing import Any

from estim.events import DELIVERED_KEY
from estim.records import chain
from estim.records.findings import Finding, Severity
from estim.records.models import DeviceRecord, SessionRecord, SessionStart

# Event kinds the records store writes itself; the controller's kinds never start so.
OPENED_KIND = "records.opened"
END_KIND = "records.end"
DEVICE_KIND = "records.device"
CONNECTED_KIND = "connected"
"""The controller's event on connecting; its data names the device (model, serial_number,
firmware), which the records copy onto the session row."""


def device_of(kind: str, data: Any) -> DeviceRecord | None:
    """The device an event names, if it names one (see ``CONNECTED_KIND``)."""
    if kind == OPENED_KIND and isinstance(data, dict):
        return DeviceRecord.from_data(data.get("device"))
    if kind in (CONNECTED_KIND, DEVICE_KIND):
        return DeviceRecord.from_data(data)
    return None


def header_fields(values: dict[str, Any], code: str) -> dict[str, Any]:
    """The fields a session's chain is anchored to (set once, when it opens)."""
    return {
        "uid": values["uid"],
        "patient": code,
        "prescription_id": values["prescription_id"],
        "prescription_revision": values["prescription_revision"],
        "prescription_sha256": values["prescription_sha256"],
        "protocol_sha256": values["protocol_sha256"],
        "profile_name": values["profile_name"],
        "profile_sha256": values["profile_sha256"],
        "validation_sha256": values["validation_sha256"],
        "clinician": values["clinician"],
        "diary_day": values["diary_day"].isoformat(),
        "started_at": values["started_at"],
        "override_id": values["override_id"],
    }


def header_of(record: SessionRecord) -> dict[str, Any]:
    values = {
        "uid": record.uid,
        "prescription_id": record.prescription_id,
        "prescription_revision": record.prescription_revision,
        "prescription_sha256": record.prescription_sha256,
        "protocol_sha256": record.protocol_sha256,
        "profile_name": record.profile_name,
        "profile_sha256": record.profile_sha256,
        "validation_sha256": record.validation_sha256,
        "clinician": record.clinician,
        "diary_day": record.diary_day,
        "started_at": chain.wall_time_text(record.started_at),
        "override_id": record.override_id,
    }
    return header_fields(values, record.patient_code)


def verify_session(record: SessionRecord, events: list[chain.ChainedEvent]) -> chain.ChainVerdict:
    genesis = chain.header_hash(header_of(record))
    if genesis != record.header_sha256:
        return chain.ChainVerdict(
            0,
            genesis,
            chain.BrokenLink(
                0,
                "the session header (patient, prescription, protocol, profile, clinician "
                "or start time) was altered: its hash no longer matches",
            ),
        )
    verdict = chain.verify(
        genesis,
        events,
        expected_count=record.event_count,
        expected_head=record.last_event_sha256,
    )
    if not verdict.ok:
        return verdict
    named = [(ev, device_of(ev.kind, ev.data)) for ev in events]
    named = [(ev, d) for ev, d in named if d is not None]
    logged_device = named[-1][1] if named else None
    if logged_device != record.device:
        at = named[-1][0].sequence if named else 0
        return _broken(
            verdict,
            at,
            f"the session row's device ({record.device}) differs from the device the log "
            f"names ({logged_device}): the row was altered",
        )
    ends = [ev for ev in events if ev.kind == END_KIND]
    if record.outcome is None:
        if ends:
            return _broken(verdict, ends[0].sequence, "an end event exists but the session is open")
        return verdict
    if len(ends) != 1 or ends[0] is not events[-1]:
        return _broken(
            verdict,
            len(events) - 1,
            "the session is closed but its log does not end with its end event",
        )
    data = ends[0].data
    recorded = {
        "outcome": record.outcome.value,
        "reason": record.reason,
        "ended_at": None if record.ended_at is None else chain.wall_time_text(record.ended_at),
        "confirmed_amplitude_ua": record.confirmed_amplitude_ua,
        "on_time_us": record.on_time_us,
        "contractions": record.contractions,
    }
    logged = dict(data)
    if isinstance(logged.get("reason"), str):
        # The row reads back stripped (so whitespace is all it could differ in); logs
        # written before the store stripped reasons itself kept the raw text.
        logged["reason"] = logged["reason"].strip()
    for key, value in recorded.items():
        if logged.get(key) != value:
            return _broken(
                verdict,
                ends[0].sequence,
                f"the session row's {key} ({value!r}) differs from the logged end "
                f"({logged.get(key)!r}): the row was altered",
            )
    return verdict


def _broken(verdict: chain.ChainVerdict, sequence: int, reason: str) -> chain.ChainVerdict:
    return chain.ChainVerdict(verdict.count, verdict.head_hash, chain.BrokenLink(sequence, reason))


def delivered_columns(data: Any) -> dict[str, int | None]:
    """The session row's dose columns from an event that reports them (else nothing).

    The controller's once-a-second status event carries what has been delivered so far
    (``{"delivered": {"confirmed_ua", "on_time_us", "contractions"}}``); writing it onto
    the session row in the same transaction as the event means a session whose process
    dies still says what the patient received, to within a second.
    """
    figures = data.get(DELIVERED_KEY) if isinstance(data, dict) else None
    if not isinstance(figures, dict):
        return {}
    columns = {
        "confirmed_amplitude_ua": figures.get("confirmed_ua"),
        "on_time_us": figures.get("on_time_us"),
        "contractions": figures.get("contractions"),
    }
    for value in columns.values():
        if value is not None and (type(value) is not int or value < 0):
            return {}  # not the controller's figures: the row keeps what it had
    return columns


def device_columns(device: DeviceRecord | None) -> dict[str, str]:
    if device is None:
        return {}
    return {
        "device_model": device.model,
        "device_serial": device.serial_number,
        "device_firmware": device.firmware,
    }


def validation_findings(start: SessionStart) -> list[Finding]:
    """Does the bench validation record given vouch for this profile and this unit?

    The controller checks the record fully before connecting (``check_record``); this
    is the records' own check of what they are asked to store.
    """
    ref = start.validation
    if ref is None:
        return []
    fix = "bench-test this unit with this profile: estim profile bench PROFILE --port PORT"
    problems = []
    if ref.fields.get("passed") is not True:
        problems.append("it did not pass")
    if ref.fields.get("profile_sha256") != start.profile_sha256:
        problems.append(
            f"it is for profile {str(ref.fields.get('profile_sha256'))[:12]}, not the profile in "
            f"use ({start.profile_sha256[:12]})"
        )
    unit = (ref.fields.get("device_serial"), ref.fields.get("device_firmware"))
    if start.device is not None and unit != (start.device.serial_number, start.device.firmware):
        problems.append(
            f"it is for serial {unit[0]} firmware {unit[1]}, not the connected "
            f"{start.device.serial_number} firmware {start.device.firmware}"
        )
    if not problems:
        return []
    return [
        Finding(
            "VAL-RECORD",
            Severity.BLOCK,
            f"the validation record {ref.path} does not vouch for this device: "
            + "; ".join(problems),
            fix=fix,
        )
    ]
