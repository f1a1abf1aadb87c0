"""The built-in protocol library, the file loaders, the schemas, and the docs kept in step."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from estim.device.profile import builtin_profile
from estim.errors import InputError, NotFoundError, SpecVersionError
from estim.files import to_json, to_toml
from estim.protocols.catalog import (
    find_protocol,
    get_protocol,
    library_dir,
    library_markdown_table,
    list_protocols,
    load_prescription,
    load_protocol,
    protocol_ids,
)
from estim.protocols.models import (
    Confidence,
    Continuous,
    CycledDuty,
    Indication,
    ShapeKind,
)
from estim.protocols.prescription import Prescription, ProtocolRef
from estim.safety.checks import CHECK_TITLES, check
from estim.safety.limits import LimitId, limits_markdown_table, load_limits
from estim.schemas import SCHEMA_MODELS, json_schemas, write_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs"
D = Decimal


def test_library_has_every_indication() -> None:
    indications = {p.indication for p in list_protocols()}
    assert indications == set(Indication)
    assert len(list_protocols()) >= 5


def test_library_ids_match_file_names() -> None:
    stems = sorted(p.stem for p in library_dir().glob("*.toml"))
    assert list(protocol_ids()) == stems


@pytest.mark.parametrize("protocol_id", protocol_ids())
def test_every_protocol_cites_its_source(protocol_id: str) -> None:
    protocol = get_protocol(protocol_id)
    assert len(protocol.source.citation) > 20
    assert protocol.source.confidence in set(Confidence)
    assert protocol.eligibility
    assert protocol.content_hash == get_protocol(protocol_id).content_hash


def test_complete_denervation_is_long_pulse_as_in_rise_and_albertin() -> None:
    protocol = get_protocol("complete-denervation")
    shape = protocol.pulse.shape
    assert shape.kind is ShapeKind.LONG_BIPHASIC_RECTANGULAR
    assert 60_000 <= shape.max_phase_width_us <= 75_000  # 60-75 ms per phase
    assert protocol.pulse.period_us == 650_000  # 150 ms pulse + 500 ms pause
    cycle = protocol.cycle
    assert isinstance(cycle, CycledDuty)
    assert cycle.burst_us == 4_000_000  # 4 s trains
    assert cycle.off_s == 2  # then 2 s rest
    assert protocol.source.confidence is Confidence.C


def test_triangular_protocol_follows_pieber() -> None:
    protocol = get_protocol("partial-denervation-triangular")
    assert protocol.pulse.shape.kind is ShapeKind.LONG_BIPHASIC_TRIANGULAR
    assert protocol.pulse.shape.pulse_duration_us == 200_000  # 200 ms triangular


def test_stress_and_urge_within_the_facts_sheet_ranges() -> None:
    stress = get_protocol("stress")
    assert stress.pulse.frequency_hz is not None
    assert 35 <= stress.pulse.frequency_hz <= 50
    assert 200 <= stress.pulse.shape.max_phase_width_us <= 500
    assert isinstance(stress.cycle, CycledDuty)
    assert 5 <= stress.cycle.on_s <= 10
    assert 10 <= stress.cycle.off_s <= 30
    urge = get_protocol("urge")
    assert urge.pulse.frequency_hz is not None
    assert 4 <= urge.pulse.frequency_hz <= 20
    assert isinstance(urge.cycle, Continuous)
    assert (urge.session_duration_min, urge.sessions_per_week, urge.programme_weeks) == (20, 3, 7)


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        get_protocol("strees")
    assert "stress" in str(info.value)
    assert info.value.exit_code == 2


def test_find_protocol_by_id_or_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(to_toml(get_protocol("urge")), encoding="utf-8")
    assert find_protocol(str(path)) == get_protocol("urge")
    assert find_protocol("urge") is get_protocol("urge")
    json_path = tmp_path / "mine.json"
    json_path.write_text(to_json(get_protocol("urge")), encoding="utf-8")
    assert find_protocol(str(json_path)).content_hash == get_protocol("urge").content_hash
    with pytest.raises(InputError, match="no such file"):
        find_protocol(str(tmp_path / "missing.toml"))


def test_load_protocol_refuses_newer_spec(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    text = (library_dir() / "stress.toml").read_text(encoding="utf-8")
    path.write_text(text.replace("spec_version = 1", "spec_version = 2"), encoding="utf-8")
    with pytest.raises(SpecVersionError, match="newer than this estim understands"):
        load_protocol(path)


def test_load_protocol_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = (library_dir() / "stress.toml").read_text(encoding="utf-8")
    text = text.replace("channels = 1", "channels = 9\ncolour = 'blue'")
    text = text.replace("ceiling_ma = 50", "ceiling_ma = 'fifty'")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_protocol(path)
    locations = sorted(p.location for p in info.value.problems)
    assert locations == [
        f"{path}: amplitude.ceiling_ma",
        f"{path}: channels",
        f"{path}: colour",
    ]


def _prescription() -> Prescription:
    stress = get_protocol("stress")
    return Prescription(
        patient_code="P-7",
        protocol=ProtocolRef.of(stress),
        max_amplitude_ma=D("35.5"),
        adjustments={"frequency_hz": D(35)},  # type: ignore[dict-item]
        prescriber="Dr Test",
        start_date="2026-02-01",  # type: ignore[arg-type]
    )


def test_prescription_files_toml_and_json(tmp_path: Path) -> None:
    rx = _prescription()
    toml_path = tmp_path / "rx.toml"
    toml_path.write_text(to_toml(rx), encoding="utf-8")
    json_path = tmp_path / "rx.json"
    json_path.write_text(to_json(rx), encoding="utf-8")
    assert load_prescription(toml_path) == rx
    assert load_prescription(json_path) == rx


def test_schemas_cover_every_file_kind(tmp_path: Path) -> None:
    schemas = json_schemas()
    assert set(schemas) == {"protocol", "prescription", "device-profile", "limits"}
    assert set(SCHEMA_MODELS) == set(schemas)
    protocol_schema = schemas["protocol"]
    assert protocol_schema["$schema"].endswith("2020-12/schema")
    assert "pulse" in protocol_schema["properties"]
    assert protocol_schema["additionalProperties"] is False
    written = write_schemas(tmp_path / "schemas")
    assert sorted(p.name for p in written) == [
        "device-profile.schema.json",
        "limits.schema.json",
        "prescription.schema.json",
        "protocol.schema.json",
    ]
    assert json.loads(written[0].read_text())["title"]


def _generated_block(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(r"<!-- BEGIN GENERATED[^>]*-->\n(.*?)<!-- END GENERATED -->", text, re.S)
    assert match, f"{path} lost its generated block markers"
    return match.group(1)


def test_limits_doc_lists_every_limit_and_check() -> None:
    path = DOCS / "safety" / "limits.md"
    assert _generated_block(path) == limits_markdown_table(), (
        "docs/safety/limits.md is out of step: paste the output of "
        "python -c 'from estim.safety.limits import limits_markdown_table as t; print(t())'"
    )
    text = path.read_text(encoding="utf-8")
    for limit_id in LimitId:
        assert f"`{limit_id.value}`" in text
    for code in CHECK_TITLES:
        assert f"`{code}`" in text, code


def test_protocols_doc_lists_every_protocol_with_its_citation() -> None:
    path = DOCS / "protocols.md"
    assert _generated_block(path) == library_markdown_table(), (
        "docs/protocols.md is out of step: paste the output of "
        "python -c 'from estim.protocols.catalog import library_markdown_table as t; print(t())'"
    )
    text = path.read_text(encoding="utf-8")
    for protocol in list_protocols():
        assert f"### `{protocol.id}`" in text
        assert f"[{protocol.source.confidence.value}]" in text


EXAMPLES = DOCS / "examples"


def test_example_prescription_checks_clean() -> None:
    rx = load_prescription(EXAMPLES / "prescription-stress.toml")
    assert rx.protocol == ProtocolRef.of(get_protocol("stress")), (
        "docs/examples/prescription-stress.toml pins an old stress protocol: put the "
        "sha256 printed by `estim protocol show stress` into it"
    )
    verdict = check(rx, get_protocol("stress"), builtin_profile("estim-pf2"))
    assert verdict.exit_code == 0
    assert not verdict.warnings


def test_example_site_limits_load() -> None:
    limits = load_limits(EXAMPLES / "site-limits.toml")
    assert {limit.id for limit in limits.overrides()} == {
        LimitId.SESSION_MAX,
        LimitId.TITRATION_STEP_MAX,
    }
