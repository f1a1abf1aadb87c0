"""The contraindication checklist: the model's rules and the findings it produces."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from estim.errors import InputError
from estim.files import parse_toml, validate
from estim.records.checklist import (
    ITEMS,
    ChecklistItem,
    ContraindicationChecklist,
    ItemClass,
    checklist_findings,
    checklist_template,
)
from estim.records.findings import Severity, blocking
from estim.records.seed import all_clear_checklist

TODAY = date(2024, 5, 20)


def answered(**answers: bool) -> ContraindicationChecklist:
    base = all_clear_checklist("Dr. A. Visser", TODAY)
    return base.model_copy(
        update={"answers": {**base.answers, **{ChecklistItem(k): v for k, v in answers.items()}}}
    )


def codes(checklist: ContraindicationChecklist | None, **kwargs: object) -> list[str]:
    return [f.code for f in checklist_findings(checklist, today=TODAY, **kwargs)]  # type: ignore[arg-type]


def test_every_item_of_the_safety_facts_list_is_asked() -> None:
    assert len(ITEMS) == len(ChecklistItem) == 13
    precautions = {i for i, spec in ITEMS.items() if spec.item_class is ItemClass.PRECAUTION}
    assert precautions == {
        ChecklistItem.LOSS_OF_SENSATION,
        ChecklistItem.LARGE_PROLAPSE,
        ChecklistItem.EPILEPSY,
        ChecklistItem.HEART_DISEASE,
        ChecklistItem.BLEEDING_TENDENCY,
    }


def test_all_no_answered_today_lets_sessions_go_ahead() -> None:
    assert codes(answered()) == []


def test_missing_checklist_blocks() -> None:
    [finding] = checklist_findings(None, today=TODAY)
    assert finding.code == "CHK-MISSING"
    assert finding.blocks


def test_an_unanswered_item_blocks_and_is_named() -> None:
    partial = answered().model_copy(update={"answers": {ChecklistItem.PREGNANCY: False}})
    [finding] = checklist_findings(partial, today=TODAY)
    assert finding.code == "CHK-INCOMPLETE"
    assert "epilepsy" in finding.message
    assert "pregnancy," not in finding.message


@pytest.mark.parametrize(
    "item", [i for i, s in ITEMS.items() if s.item_class is ItemClass.ABSOLUTE]
)
def test_every_absolute_contraindication_answered_yes_blocks(item: ChecklistItem) -> None:
    findings = checklist_findings(answered(**{item.value: True}), today=TODAY)
    assert [f.code for f in blocking(findings)] == [f"CHK-CONTRA-{item.value}"]
    assert not findings[0].overridable


def test_an_absolute_contraindication_cannot_be_overridden() -> None:
    with pytest.raises(ValidationError, match="cannot be overridden"):
        ContraindicationChecklist(
            answered_by="Dr. A. Visser",
            answered_at=TODAY,
            answers={ChecklistItem.PREGNANCY: True},
            overrides={ChecklistItem.PREGNANCY: {"reason": "patient insists strongly"}},  # type: ignore[dict-item]
        )


@pytest.mark.parametrize(
    "item", [i for i, s in ITEMS.items() if s.item_class is ItemClass.PRECAUTION]
)
def test_a_precaution_blocks_until_overridden_with_a_reason(item: ChecklistItem) -> None:
    findings = checklist_findings(answered(**{item.value: True}), today=TODAY)
    [finding] = blocking(findings)
    assert finding.code == f"CHK-PRECAUTION-{item.value}"
    assert finding.overridable
    data = answered(**{item.value: True}).model_dump()
    data["overrides"] = {item: {"reason": "ceiling lowered to 20 mA; checked each visit"}}
    overridden = ContraindicationChecklist.model_validate(data)
    findings = checklist_findings(overridden, today=TODAY)
    assert blocking(findings) == []
    assert [(f.code, f.severity) for f in findings] == [
        (f"CHK-OVERRIDE-{item.value}", Severity.INFO)
    ]
    assert "ceiling lowered" in findings[0].message


def test_an_override_needs_a_real_reason_and_something_to_override() -> None:
    with pytest.raises(ValidationError, match="at least 10"):
        ContraindicationChecklist.model_validate(
            {
                "answered_by": "Dr. A. Visser",
                "answered_at": TODAY,
                "answers": {"epilepsy": True},
                "overrides": {"epilepsy": {"reason": "ok"}},
            }
        )
    with pytest.raises(ValidationError, match="nothing to override"):
        ContraindicationChecklist.model_validate(
            {
                "answered_by": "Dr. A. Visser",
                "answered_at": TODAY,
                "answers": {"epilepsy": False},
                "overrides": {"epilepsy": {"reason": "well controlled for years"}},
            }
        )


def test_unknown_items_are_refused() -> None:
    with pytest.raises(ValidationError):
        ContraindicationChecklist.model_validate(
            {"answered_by": "Dr. X", "answered_at": TODAY, "answers": {"headache": True}}
        )


def test_stale_by_age_with_a_configurable_limit() -> None:
    old = answered().model_copy(update={"answered_at": TODAY - timedelta(days=31)})
    assert codes(old) == ["CHK-STALE"]
    assert codes(old, max_age_days=45) == []
    edge = answered().model_copy(update={"answered_at": TODAY - timedelta(days=30)})
    assert codes(edge) == []


def test_stale_when_answered_before_the_prescription_changed() -> None:
    recorded = datetime(2024, 5, 20, 9, 0, tzinfo=UTC)
    assert codes(answered(), recorded_at=recorded, prescription_changed_at=recorded) == []
    later = recorded + timedelta(minutes=1)
    assert codes(answered(), recorded_at=recorded, prescription_changed_at=later) == ["CHK-STALE"]


def test_a_checklist_dated_in_the_future_blocks() -> None:
    future = answered().model_copy(update={"answered_at": TODAY + timedelta(days=1)})
    assert codes(future) == ["CHK-FUTURE"]


def test_the_template_lists_every_item_and_loads_once_filled_in() -> None:
    template = checklist_template()
    for item in ChecklistItem:
        assert f'{item.value} = "?"' in template
    with pytest.raises(InputError, match="implanted_electronic_device"):  # unanswered: refused
        validate(ContraindicationChecklist, parse_toml(template, "t"), "t", "checklist")
    text = template.replace('answered_by = ""', 'answered_by = "Dr. A. Visser"')
    text = text.replace('= "?"', "= false")
    loaded = validate(ContraindicationChecklist, parse_toml(text, "t"), "t", "checklist")
    assert loaded.unanswered == []
    assert not any(loaded.answers.values())
