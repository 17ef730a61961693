"""Shards: the device-to-shard function, the I/N spec, and splitting and merging a batch."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otactl.errors import StoreError, UsageError
from otactl.telemetry.report import Event
from otactl.telemetry.shards import (
    UNROUTABLE_SHARD,
    BadShardAnswer,
    Shard,
    device_id_of,
    merge,
    part_results,
    shard_of,
    split,
)
from otactl.telemetry.store import ReportStore


def envelope(device_id: str, seq: int = 1) -> dict[str, str]:
    return {"payload": json.dumps({"device_id": device_id, "seq": seq}), "signature": "00" * 64}


def test_the_shard_is_sha256_of_the_device_id_mod_n_and_never_changes() -> None:
    # pinned: changing the function would move every device's replay state to another database
    assert [shard_of("trk-0001", n) for n in (1, 2, 3, 7)] == [0, 0, 1, 4]
    assert [shard_of("trk-0002", n) for n in (1, 2, 3, 7)] == [0, 1, 0, 2]
    head = int.from_bytes(hashlib.sha256(b"trk-0001").digest()[:8], "big")
    assert all(shard_of("trk-0001", n) == head % n for n in range(1, 50))


@given(st.text(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_exactly_one_shard_holds_each_device(device_id: str, count: int) -> None:
    holders = [i for i in range(count) if Shard(i, count).holds(device_id)]
    assert holders == [shard_of(device_id, count)]


def test_devices_spread_evenly_over_shards() -> None:
    spread = Counter(shard_of(f"trk-{i:06d}", 3) for i in range(30_000))
    assert sorted(spread) == [0, 1, 2]
    assert all(9_500 < n < 10_500 for n in spread.values()), spread


SPECS = {
    "first of three": ("0/3", Shard(0, 3)),
    "last of three": ("2/3", Shard(2, 3)),
    "one shard": ("0/1", Shard(0, 1)),
    "spaces around": (" 1/2 ", Shard(1, 2)),
}
BAD_SPECS = {
    "index past the end": ("3/3", "--shard '3/3': shard 3 does not exist among 3 (0 to 2)"),
    "no shards": ("1/0", "--shard '1/0': the shard count must be 1 to 1024, not 0"),
    "zero of zero": ("0/0", "the shard count must be 1 to 1024, not 0"),
    "too many": ("0/5000", "the shard count must be 1 to 1024, not 5000"),
    "negative": ("-1/2", "--shard '-1/2': expected I/N"),
    "not numbers": ("a/b", "expected I/N: shard I of N, 0 <= I < N, e.g. 0/3"),
    "no slash": ("2", "expected I/N"),
    "empty": ("", "expected I/N"),
}


@pytest.mark.parametrize("spec, shard", SPECS.values(), ids=SPECS.keys())
def test_shard_specs(spec: str, shard: Shard) -> None:
    assert Shard.parse(spec) == shard
    assert str(shard) == spec.strip()


@pytest.mark.parametrize("spec, message", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_shard_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        Shard.parse(spec)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_the_device_id_is_read_from_the_payload_or_not_at_all(fleet) -> None:  # type: ignore[no-untyped-def]
    assert device_id_of(envelope("trk-0001")) == "trk-0001"
    signed = fleet.reporter("trk-0003").event("2.1.0", "canary", Event.OFFERED, fleet.now).to_json()
    assert signed["payload"].startswith('{"device_id":"trk-0003"')  # canonical: read without parsing
    assert device_id_of(signed) == "trk-0003"
    for payload, device_id in (('{"device_id":"a\\u0062","seq":1}', "ab"),  # an escape: parsed
                               ('{ "device_id": "trk-0002" }', "trk-0002"),  # not canonical: parsed
                               ('{"device_id":"trk-0002', None)):  # fmt: skip
        assert device_id_of({"payload": payload}) == device_id, payload
    for bad in (None, 3, [], {}, {"payload": 3}, {"payload": "not json"}, {"payload": "[1]"},
                {"payload": '{"device_id": 7}'}, {"payload": "[" * 100_000}):  # fmt: skip
        assert device_id_of(bad) is None, bad


def test_a_batch_splits_by_shard_in_batch_order_and_unreadable_reports_go_to_one_shard() -> None:
    ids = [f"trk-{i:04d}" for i in range(1, 21)]
    batch: list[object] = [envelope(d) for d in ids]
    batch.insert(5, {"payload": "not json"})
    batch.append("not an envelope")
    parts = split(batch, 3)
    assert sorted(i for ix in parts.values() for i in ix) == list(range(len(batch)))  # each report once
    assert all(ix == sorted(ix) for ix in parts.values())
    assert 5 in parts[UNROUTABLE_SHARD] and len(batch) - 1 in parts[UNROUTABLE_SHARD]
    for shard, indexes in parts.items():
        for i in indexes:
            device_id = device_id_of(batch[i])
            assert device_id is None or shard_of(device_id, 3) == shard
    assert split([], 3) == {}
    assert split(batch, 1) == {0: list(range(len(batch)))}


def results(n: int, status: str = "accepted") -> list[dict[str, Any]]:
    return [{"index": i, "status": status} for i in range(n)]


def test_merged_results_are_in_batch_order_with_the_shards_answers() -> None:
    parts = {0: [0, 3], 1: [1], 2: [2, 4]}
    answers: dict[int, list[dict[str, Any]] | str] = {
        0: [{"index": 0, "status": "accepted"}, {"index": 1, "status": "refused", "reason": "replayed", "detail": "d"}],
        1: "shard 1/3 is unreachable",
        2: results(2),
    }
    merged = merge(5, parts, answers)
    assert [r["index"] for r in merged] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in merged] == ["accepted", "unavailable", "accepted", "refused", "accepted"]
    assert merged[3]["reason"] == "replayed"
    assert merged[1]["detail"] == "shard 1/3 is unreachable"
    with pytest.raises(ValueError, match="in no part"):
        merge(6, parts, answers)


BAD_ANSWERS = {
    "not an object": [],
    "no results": {"accepted": 1},
    "too few": {"results": results(1)},
    "out of order": {"results": [{"index": 1, "status": "accepted"}, {"index": 0, "status": "accepted"}]},
    "unknown status": {"results": [{"index": 0, "status": "accepted"}, {"index": 1, "status": "maybe"}]},
}


@pytest.mark.parametrize("doc", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_a_shards_answer_must_match_its_part(doc: object) -> None:
    with pytest.raises(BadShardAnswer):
        part_results(doc, 2)
    assert part_results({"results": results(2)}, 2) == results(2)


def test_a_database_belongs_to_the_shard_it_first_served(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "shard0.db")
    try:
        store.claim_shard("0/2")
        store.claim_shard("0/2")  # a restart as the same shard
        for other, message in (("0/3", "not --shard 0/3"), ("1/2", "not --shard 1/2"), (None, "not unsharded")):
            with pytest.raises(StoreError, match=f"belongs to shard 0/2, {message}: its devices' replay state"):
                store.claim_shard(other)
    finally:
        store.close()
    single = ReportStore(tmp_path / "single.db")
    try:
        single.claim_shard(None)
        single.claim_shard(None)
        single.claim_shard("0/3")  # a single ingest becomes shard 0 (resharding, docs/scaling.md)
        with pytest.raises(StoreError):
            single.claim_shard(None)
    finally:
        single.close()
