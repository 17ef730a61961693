"""Device enrolment: the registry and the devices file `telemetry serve --devices` reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from otactl.errors import InputFileError
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice, load_registry
from otactl.telemetry.source import StratumKey

KEY = "ab" * 32


def record(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": "otactl/device/1", "device_id": "trk-0001", "model": "t9-engine",
        "hardware_revision": "revB", "variant": "hp-400", "region": "eu", "tags": ["lab"], "pin": None,
        "public_key": KEY,
    }  # fmt: skip
    doc.update(changes)
    return doc


def test_loads_device_records_from_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps([record(), record(device_id="trk-0002", public_key="cd" * 32)]))
    (tmp_path / "d.yaml").write_text(
        "- {device_id: trk-0001, model: t9-engine, variant: hp-400, region: eu, public_key: '" + KEY + "'}\n"
    )
    for name, n in (("d.json", 2), ("d.yaml", 1)):
        registry = load_registry(tmp_path / name)
        assert len(registry) == n
        device = registry.get("trk-0001")
        assert device is not None and device.stratum == StratumKey("t9-engine", "hp-400", "eu")
        assert registry.verify_key("trk-0001") is not None
        assert registry.get("trk-9999") is None


def listing(*records: dict[str, object], **changes: object) -> dict[str, object]:
    """What `otactl fleet list -o json` writes (its records carry no schema of their own)."""
    doc: dict[str, object] = {"schema": "otactl/fleet/1",
                              "devices": [{k: v for k, v in r.items() if k != "schema"} for r in records]}
    doc.update(changes)
    return doc


def test_loads_a_fleet_listing_from_json_and_yaml(tmp_path: Path) -> None:
    doc = listing(record(), record(device_id="trk-0002", public_key="cd" * 32, region="us"))
    (tmp_path / "fleet.json").write_text(json.dumps(doc, indent=2))
    (tmp_path / "fleet.yaml").write_text(json.dumps(doc))  # JSON is YAML
    for name in ("fleet.json", "fleet.yaml"):
        registry = load_registry(tmp_path / name)
        assert registry.enrolled_by_stratum() == {StratumKey("t9-engine", "hp-400", "eu"): 1,
                                                  StratumKey("t9-engine", "hp-400", "us"): 1}


SHAPES = "must be a list of device records, or a fleet listing from `otactl fleet list -o json`"
BAD_FILES = {
    "not JSON": ("d.json", "[{", "d.json:1: not valid JSON"),
    "not a list": ("d.json", "{}", "schema: missing; the file " + SHAPES),
    "a number": ("d.yaml", "7\n", f"d.yaml:1: {SHAPES}"),
    "other document": ("d.json", json.dumps(listing(schema="otactl/releases/1")),
                       "schema: 'otactl/releases/1' is not 'otactl/fleet/1'; the file " + SHAPES),
    "listing without devices": ("d.json", json.dumps({"schema": "otactl/fleet/1"}),
                                "devices: must be a list of device records"),
    "listing, unknown key": ("d.json", json.dumps(listing(colour="red")), "colour: unknown field in a fleet listing"),
    "listing, bad record": ("d.yaml", "schema: otactl/fleet/1\ndevices:\n  - " + json.dumps(record()) + "\n  - "
                            + json.dumps(record(device_id="trk-0002", variant=None)) + "\n",
                            "d.yaml:4: devices[1]: variant must be"),
    "not a mapping": ("d.json", "[1]", "[0]: a device record must be a mapping"),
    "unknown field": ("d.json", json.dumps([record(colour="red")]), "[0].colour: unknown field"),
    "missing key": ("d.json", json.dumps([{k: v for k, v in record().items() if k != "public_key"}]),
                    "[0].public_key: missing field"),
    "bad key": ("d.json", json.dumps([record(public_key="AB" * 32)]), "public_key must be an ed25519"),
    "other schema": ("d.json", json.dumps([record(schema="otactl/device/9")]), "[0].schema: unsupported"),
    "enrolled twice": ("d.json", json.dumps([record(), record()]),
                       "[1].device_id: device 'trk-0001' is enrolled twice"),
    "yaml line": ("d.yaml", "- " + json.dumps(record()) + "\n- " + json.dumps(record(region="e u")) + "\n",
                  "d.yaml:2: [1]: region must be an identifier"),
    "yaml syntax": ("d.yaml", "- [", "not valid YAML"),
    "missing file": ("absent.yaml", None, "file not found"),
}  # fmt: skip


@pytest.mark.parametrize("name, text, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_devices_files_name_file_line_and_field(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputFileError) as err:
        load_registry(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)
    assert message in str(err.value)


def test_registry_takes_any_device_records() -> None:
    repo_record = SimpleNamespace(device_id="trk-0007", model="t9-engine", variant="hp-300", region="us",
                                  public_key=KEY, hardware_revision="revB", tags=(), pin=None)  # fmt: skip
    registry = DeviceRegistry([repo_record, EnrolledDevice("trk-0008", "t9-engine", "hp-300", "us", "cd" * 32)])  # type: ignore[list-item, arg-type]
    assert sorted(d.device_id for d in registry) == ["trk-0007", "trk-0008"]
    assert registry.enrolled_by_stratum() == {StratumKey("t9-engine", "hp-300", "us"): 2}


def test_registry_takes_the_repositorys_device_records() -> None:
    from otactl.fleet.records import DeviceRecord

    rec = DeviceRecord(device_id="trk-0009", model="t9-engine", hardware_revision="revB", variant="hp-500",
                       region="eu", tags=("lab",), public_key=KEY)  # fmt: skip
    device = DeviceRegistry([rec]).get("trk-0009")
    assert device is not None and device.stratum == StratumKey("t9-engine", "hp-500", "eu")
