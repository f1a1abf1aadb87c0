"""TOML and JSON round trips are exact: equal models, equal content hashes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from estim.device.profile import DeviceProfile, load_profile
from estim.files import parse_json, parse_toml, to_json, to_toml
from estim.protocols.catalog import load_prescription, load_protocol
from estim.protocols.models import Protocol, canonical_hash
from estim.testing import strategies as es


@given(es.protocols())
def test_protocol_round_trips(protocol: Protocol) -> None:
    via_toml = Protocol.model_validate(parse_toml(to_toml(protocol), "mem"))
    via_json = Protocol.model_validate(parse_json(to_json(protocol), "mem"))
    assert via_toml == protocol
    assert via_json == protocol
    assert via_toml.content_hash == via_json.content_hash == protocol.content_hash


@given(st.data())
def test_prescription_round_trips_through_files(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(adjustable=True))
    prescription = data.draw(es.prescriptions(protocol))
    with tempfile.TemporaryDirectory() as tmp:
        toml_path = Path(tmp) / "rx.toml"
        json_path = Path(tmp) / "rx.json"
        toml_path.write_text(to_toml(prescription), encoding="utf-8")
        json_path.write_text(to_json(prescription), encoding="utf-8")
        for loaded in (load_prescription(toml_path), load_prescription(json_path)):
            assert loaded == prescription
            assert canonical_hash(loaded) == canonical_hash(prescription)
        proto_path = Path(tmp) / "p.toml"
        proto_path.write_text(to_toml(protocol), encoding="utf-8")
        assert load_protocol(proto_path).content_hash == protocol.content_hash


@given(es.device_profiles())
def test_profile_round_trips_through_files(profile: DeviceProfile) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("d.toml", to_toml(profile)), ("d.json", to_json(profile))):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            loaded = load_profile(path)
            assert loaded == profile
            assert loaded.sha256 == profile.sha256
