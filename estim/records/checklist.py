"""The pre-flight contraindication checklist, answered by the prescriber.

Items and their classes come from the project's safety facts (FDA labelling [C];
continence device FAQ [C2]). An **absolute** contraindication answered "yes" blocks
every session of the course. A **precaution** answered "yes" blocks until the
prescriber records an explicit override with a reason. A checklist that is missing,
incomplete (an item left unanswered, e.g. one added in a later estim), older than the
allowed age, or answered before the prescription last changed blocks too:
:func:`checklist_findings` says which, as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import Field, model_validator

from estim.protocols.models import Frozen
from estim.records.findings import Finding, Severity

CHECKLIST_SPEC_VERSION = 1
"""The checklist file format this code reads and writes."""

DEFAULT_MAX_AGE_DAYS = 30
"""How long a checklist stays valid [I]. Conditions on it change within weeks (pregnancy,
infections, surgery): a monthly re-check is our own choice, configurable per call."""


class ItemClass(StrEnum):
    ABSOLUTE = "absolute"  # "yes" blocks, no override
    PRECAUTION = "precaution"  # "yes" needs a reasoned override


class ChecklistItem(StrEnum):
    IMPLANTED_ELECTRONIC_DEVICE = "implanted_electronic_device"
    PREGNANCY = "pregnancy"
    RECENT_CHILDBIRTH = "recent_childbirth"
    RECENT_PELVIC_SURGERY = "recent_pelvic_surgery"
    PELVIC_CANCER = "pelvic_cancer"
    URINARY_TRACT_INFECTION = "urinary_tract_infection"
    VAGINAL_INFECTION = "vaginal_infection"
    BROKEN_SKIN = "broken_skin"
    LOSS_OF_SENSATION = "loss_of_sensation"
    LARGE_PROLAPSE = "large_prolapse"
    EPILEPSY = "epilepsy"
    HEART_DISEASE = "heart_disease"
    BLEEDING_TENDENCY = "bleeding_tendency"


@dataclass(frozen=True, slots=True)
class ItemSpec:
    question: str
    item_class: ItemClass


ITEMS: dict[ChecklistItem, ItemSpec] = {
    ChecklistItem.IMPLANTED_ELECTRONIC_DEVICE: ItemSpec(
        "Demand pacemaker or other implanted electronic device?", ItemClass.ABSOLUTE
    ),
    ChecklistItem.PREGNANCY: ItemSpec("Pregnant or trying to conceive?", ItemClass.ABSOLUTE),
    ChecklistItem.RECENT_CHILDBIRTH: ItemSpec(
        "Within 12 weeks of childbirth (some wait 6 weeks, until bleeding stops)?",
        ItemClass.ABSOLUTE,
    ),
    ChecklistItem.RECENT_PELVIC_SURGERY: ItemSpec(
        "Within 12 weeks of pelvic surgery?", ItemClass.ABSOLUTE
    ),
    ChecklistItem.PELVIC_CANCER: ItemSpec(
        "Pelvic cancer under treatment or review?", ItemClass.ABSOLUTE
    ),
    ChecklistItem.URINARY_TRACT_INFECTION: ItemSpec("Urinary tract infection?", ItemClass.ABSOLUTE),
    ChecklistItem.VAGINAL_INFECTION: ItemSpec(
        "Vaginal infection or discharge?", ItemClass.ABSOLUTE
    ),
    ChecklistItem.BROKEN_SKIN: ItemSpec(
        "Broken or inflamed skin or mucosa where the electrode sits?", ItemClass.ABSOLUTE
    ),
    ChecklistItem.LOSS_OF_SENSATION: ItemSpec(
        "Loss of sensation at the electrode site?", ItemClass.PRECAUTION
    ),
    ChecklistItem.LARGE_PROLAPSE: ItemSpec("Large prolapse?", ItemClass.PRECAUTION),
    ChecklistItem.EPILEPSY: ItemSpec("Epilepsy?", ItemClass.PRECAUTION),
    ChecklistItem.HEART_DISEASE: ItemSpec("Heart disease?", ItemClass.PRECAUTION),
    # Listed after the precautions in the facts sheet; FDA TENS labelling words it as a
    # caution ("tendency to bleed internally"), so a precaution here [C2].
    ChecklistItem.BLEEDING_TENDENCY: ItemSpec("Bleeding tendency?", ItemClass.PRECAUTION),
}


class PrecautionOverride(Frozen):
    """The prescriber's reason to go ahead despite a precaution answered "yes"."""

    reason: str = Field(min_length=10, max_length=500)


class ContraindicationChecklist(Frozen):
    """One answered checklist. Items may be missing (reported as incomplete), never unknown."""

    spec_version: int = Field(default=CHECKLIST_SPEC_VERSION, ge=1)
    answered_by: str = Field(min_length=2, max_length=120)
    answered_at: date
    answers: dict[ChecklistItem, bool] = Field(default_factory=dict)
    overrides: dict[ChecklistItem, PrecautionOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_only_for_precautions_answered_yes(self) -> ContraindicationChecklist:
        for item in self.overrides:
            if ITEMS[item].item_class is ItemClass.ABSOLUTE:
                raise ValueError(
                    f"overrides.{item}: an absolute contraindication cannot be overridden"
                )
            if self.answers.get(item) is not True:
                raise ValueError(
                    f"overrides.{item}: there is nothing to override, the item is not "
                    "answered yes; remove the override"
                )
        return self

    @property
    def unanswered(self) -> list[ChecklistItem]:
        return [item for item in ChecklistItem if item not in self.answers]


def checklist_findings(
    checklist: ContraindicationChecklist | None,
    *,
    today: date,
    recorded_at: datetime | None = None,
    prescription_changed_at: datetime | None = None,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
) -> list[Finding]:
    """Everything the checklist says about starting a session today.

    ``recorded_at`` is when the checklist was stored and ``prescription_changed_at``
    when the prescription last changed (both aware datetimes): a checklist recorded
    before the change answered questions about another prescription, so it is stale.
    """
    if max_age_days < 0:
        raise ValueError("max_age_days must be zero or more")
    if checklist is None:
        return [
            Finding(
                "CHK-MISSING",
                Severity.BLOCK,
                "no contraindication checklist is recorded for this prescription",
                fix="the prescriber answers it: estim checklist answer CODE",
            )
        ]
    findings: list[Finding] = []
    missing = checklist.unanswered
    if missing:
        findings.append(
            Finding(
                "CHK-INCOMPLETE",
                Severity.BLOCK,
                "the checklist leaves unanswered: " + ", ".join(missing),
                fix="answer every item: estim checklist answer CODE",
            )
        )
    for item, answer in checklist.answers.items():
        if not answer:
            continue
        spec = ITEMS[item]
        if spec.item_class is ItemClass.ABSOLUTE:
            findings.append(
                Finding(
                    f"CHK-CONTRA-{item}",
                    Severity.BLOCK,
                    f"contraindication answered yes: {spec.question}",
                    fix="no stimulation while this applies; re-answer the checklist when it "
                    "no longer does",
                )
            )
        elif item in checklist.overrides:
            findings.append(
                Finding(
                    f"CHK-OVERRIDE-{item}",
                    Severity.INFO,
                    f"precaution answered yes and overridden by {checklist.answered_by}: "
                    f"{spec.question} Reason: {checklist.overrides[item].reason}",
                )
            )
        else:
            findings.append(
                Finding(
                    f"CHK-PRECAUTION-{item}",
                    Severity.BLOCK,
                    f"precaution answered yes without an override: {spec.question}",
                    fix="the prescriber records an override with a reason, or the course "
                    "does not go ahead",
                    overridable=True,
                )
            )
    findings.extend(
        _staleness(checklist, today, recorded_at, prescription_changed_at, max_age_days)
    )
    return findings


def _staleness(
    checklist: ContraindicationChecklist,
    today: date,
    recorded_at: datetime | None,
    prescription_changed_at: datetime | None,
    max_age_days: int,
) -> list[Finding]:
    renew = "re-answer the checklist: estim checklist answer CODE"
    if checklist.answered_at > today:
        return [
            Finding(
                "CHK-FUTURE",
                Severity.BLOCK,
                f"the checklist is dated {checklist.answered_at}, after today ({today})",
                fix=renew,
            )
        ]
    age_days = (today - checklist.answered_at).days
    if age_days > max_age_days:
        expired = checklist.answered_at + timedelta(days=max_age_days)
        return [
            Finding(
                "CHK-STALE",
                Severity.BLOCK,
                f"the checklist was answered on {checklist.answered_at}, {age_days} days ago; "
                f"it is valid for {max_age_days} days (expired after {expired})",
                fix=renew,
            )
        ]
    if (
        recorded_at is not None
        and prescription_changed_at is not None
        and recorded_at < prescription_changed_at
    ):
        return [
            Finding(
                "CHK-STALE",
                Severity.BLOCK,
                "the checklist was answered before the prescription last changed "
                f"({prescription_changed_at:%Y-%m-%d %H:%M} UTC)",
                fix=renew,
            )
        ]
    return []


def checklist_template() -> str:
    """A TOML checklist for the prescriber to fill in, every item present and commented."""
    lines = [
        "# estim contraindication checklist: answer every item true (yes) or false (no).",
        '# Every answer starts as "?": a file with any "?" left is refused, so an',
        "# unedited template can never read as 'no contraindications'.",
        "# Absolute contraindications answered true block every session of the course.",
        "# Precautions answered true need an override with a reason, e.g.",
        "#   [overrides.loss_of_sensation]",
        '#   reason = "amplitude ceiling lowered to 20 mA; impedance checked each session"',
        f"spec_version = {CHECKLIST_SPEC_VERSION}",
        'answered_by = ""',
        "answered_at = " + date.today().isoformat(),
        "",
        "[answers]",
    ]
    for item, spec in ITEMS.items():
        lines.append(f"# {spec.item_class.value}: {spec.question}")
        lines.append(f'{item.value} = "?"')
    return "\n".join(lines) + "\n"
