"""Inventories (CSV and YAML) parse into device records; bad ones name file, line and field.

Each bad inventory in bad_inventories/ has a ``.expect`` file beside it with the exact message
(``{file}`` stands for the path it was read from).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_parts import INVENTORY_CSV, INVENTORY_YAML

from otactl.errors import ExitCode, InputFileError, OtactlError
from otactl.fleet.records import DeviceRecord, read_inventory

BAD = Path(__file__).parent / "bad_inventories"
BAD_FILES = sorted(p for p in BAD.iterdir() if p.suffix in (".csv", ".yaml"))
REQUIRED_BAD_CASES = {"unknown-column", "duplicate-device", "bad-public-key",
                      "yaml-unknown-field", "yaml-duplicate-device", "yaml-bad-public-key"}


def test_csv_and_yaml_inventories_give_the_same_records() -> None:
    csv_inv = read_inventory(INVENTORY_CSV)
    yaml_inv = read_inventory(INVENTORY_YAML)
    assert len(csv_inv.records) == 12
    assert csv_inv.records == yaml_inv.records
    assert [r.to_bytes() for r in csv_inv.records] == [r.to_bytes() for r in yaml_inv.records]
    first = csv_inv.records[0]
    assert first == DeviceRecord("t9-0000", "t9-engine", "revB", "hp-300", "eu", ("lab",),
                                 "d4e3edc042b815c592733935f288e8867cf67f5893a2b5ac1d21fa1037b4f7c9")
    assert csv_inv.lines["t9-0000"] == 2 and csv_inv.lines["t9-0011"] == 13  # header is line 1
    assert yaml_inv.lines["t9-0000"] == 2  # after the comment line


def test_the_bad_inventory_table_covers_every_required_rule() -> None:
    assert {p.stem for p in BAD_FILES} >= REQUIRED_BAD_CASES
    for p in BAD_FILES:
        assert p.with_name(p.name + ".expect").is_file(), f"{p.name} has no .expect file"


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_inventory_gets_its_exact_message(path: Path) -> None:
    expected = path.with_name(path.name + ".expect").read_text().strip().replace("{file}", str(path))
    with pytest.raises(InputFileError) as caught:
        read_inventory(path)
    assert str(caught.value) == expected
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.line is not None


@pytest.mark.parametrize("field", ["device_id", "model", "hardware_revision", "variant", "region", "public_key",
                                   "pin", "tags"])
def test_a_trailing_newline_is_not_part_of_a_valid_name(field: str) -> None:
    """``$`` matches before a final newline: every check anchors at the very end (``\\Z``), so no name,
    key or version reaches a path segment or a record's JSON with a newline in it."""
    good = {"device_id": "d1", "model": "m", "hardware_revision": "revA", "variant": "v", "region": "eu",
            "tags": ("lab",), "public_key": "ab" * 32, "pin": "2.0.0"}
    DeviceRecord(**good)  # type: ignore[arg-type]  # the control
    bad = {**good, field: ("lab\n",) if field == "tags" else good[field] + "\n"}
    with pytest.raises((ValueError, OtactlError)):
        DeviceRecord(**bad)  # type: ignore[arg-type]


def test_a_missing_inventory_is_named() -> None:
    with pytest.raises(InputFileError, match=r"nope\.csv: file not found"):
        read_inventory(Path("nope.csv"))


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param("lab", ("lab",), id="one"),
        pytest.param("lab;eu-pilot", ("eu-pilot", "lab"), id="semicolons-sorted"),
        pytest.param("lab; lab ;x", ("lab", "x"), id="deduplicated-and-trimmed"),
        pytest.param("", (), id="none"),
    ],
)
def test_csv_tags(tmp_path: Path, tags: str, expected: tuple[str, ...]) -> None:
    inv = tmp_path / "inv.csv"
    inv.write_text("device_id,model,hardware_revision,variant,region,tags,public_key\n"
                   f"d1,m,revA,v,eu,{tags},{'ab' * 32}\n")
    assert read_inventory(inv).records[0].tags == expected


def test_public_keys_are_normalised_to_lowercase(tmp_path: Path) -> None:
    inv = tmp_path / "inv.csv"
    inv.write_text(f"device_id,model,hardware_revision,variant,region,public_key\nd1,m,revA,v,eu,{'AB' * 32}\n")
    assert read_inventory(inv).records[0].public_key == "ab" * 32


def test_record_bytes_are_the_documented_format() -> None:
    r = read_inventory(INVENTORY_CSV).records[1]
    assert r.to_bytes() == (
        b'{"device_id":"t9-0001","hardware_revision":"revA","model":"t9-engine","pin":null,'
        b'"public_key":"222cad7039e2175c99d2586b7cda9342a37c960abc67e55729b80cb5b0623c0f","region":"eu",'
        b'"schema":"otactl/device/1","tags":["lab"],"variant":"hp-400"}')
    assert DeviceRecord.from_bytes(r.to_bytes(), "x") == r


def test_a_record_entitled_copies_every_field_but_the_entitlement() -> None:
    """``DeviceRecord.entitled`` copies fields by name (slots, no __dict__): a field added to the record
    and not to that list would be left unset on every imported record."""
    import dataclasses

    from otactl.fleet import records

    assert (*records._COPIED, "entitlement") == tuple(f.name for f in dataclasses.fields(records.DeviceRecord))
    r = records.DeviceRecord("t9-1", "m", "revA", "hp-300", "eu", ("a",), "ab" * 32, "2.0.0", ("turbo",))
    assert r.entitled(None) == r and not hasattr(r, "__dict__")
