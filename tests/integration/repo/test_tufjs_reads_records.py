"""Interop with a second client (issue 10): tuf-js reads what a device reads, from the otactl-made repository.

The repository is made by the real CLI (init, two releases built, approved and published, the example fleet
imported, a rollout started) and served as static files on 127.0.0.1. tuf-js (tests/js/fetch_target.mjs,
the version pinned in tests/js/package-lock.json) and python-tuf's ngclient (otactl's ``make_updater``)
each start from root v1 and must download the same bytes:

- a device's record ``devices/<id>.json``, which sits in a succinct hash bin ``devices-XX`` delegated from
  ``devices`` (TAP 15): tuf-js supports ``succinct_roles`` (``Delegations.rolesForTarget`` in @tufjs/models
  maps the path to its bin, terminating, and ``Metadata.verifyDelegate`` checks the bin against the
  succinct role's keys), so it walks targets → devices → devices-XX as ngclient does;
- the model's rollout policy ``rollouts/<model>.json`` (delegated by path from targets).

A record changed on disk is refused by tuf-js (hash mismatch), and a record re-signed by ``fleet set``
reaches tuf-js through its cached state, as it reaches a device.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures.repo import PASSPHRASE, http_client, init_workspace, initial_root, ok, open_context, run_otactl, served
from fixtures.tufjs import tufjs_fetch, tufjs_run

from otactl.repo import layout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MODEL = "t9-engine"
DEVICE = "t9-0001"
RECORD = layout.device_path(DEVICE)
POLICY = layout.rollout_path(MODEL)


@pytest.fixture(scope="module")
def fleet_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a device maker's workspace holds once devices poll: releases, a fleet, a rollout under way."""
    ws = init_workspace(tmp_path_factory.mktemp("tufjs") / "ws")
    for version in ("2.0.0", "2.1.0"):
        ok(run_otactl("release", "build", str(ROOT / "manifests" / f"{MODEL}-{version}.yaml"), cwd=ws))
        ok(run_otactl("release", "approve", version, "--key", "release-manager", cwd=ws))
        ok(run_otactl("release", "publish", version, cwd=ws))
    ok(run_otactl("fleet", "import", str(ROOT / "examples" / "fleet" / "inventory.csv"), cwd=ws))
    ok(run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(ROOT / "canary" / "default.yaml"), cwd=ws))
    return ws


@pytest.fixture
def ws(fleet_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    dest = tmp_path / "ws"
    shutil.copytree(fleet_template, dest, symlinks=True)
    return dest.resolve()


def trust_anchor(ws: Path, tmp_path: Path) -> Path:
    """Root v1 as init published it: what both clients ship with."""
    path = tmp_path / "root-v1.json"
    path.write_bytes(initial_root(ws))
    return path


def ngclient_download(root: Path, url: str, client_dir: Path, target: str) -> tuple[bytes, Any]:
    """The bytes and the custom field of ``target`` as a device (ngclient, otactl's fetcher) gets them."""
    with http_client(root.read_bytes(), url, client_dir) as (updater, _):
        updater.refresh()
        info = updater.get_targetinfo(target)
        assert info is not None, f"ngclient did not find {target}"
        data = Path(updater.download_target(info, str(client_dir / "download.bin"))).read_bytes()
        return data, info.unrecognized_fields.get("custom")


def test_tufjs_downloads_a_device_record_and_the_rollout_policy_as_ngclient_does(ws: Path, tmp_path: Path) -> None:
    root = trust_anchor(ws, tmp_path)
    ctx = open_context(ws)
    repo = ctx.repository()
    bin_name = repo.bin_for(RECORD)
    customs: dict[str, Any] = {}
    with served(ctx.store) as url:
        for target in (RECORD, POLICY):
            name = target.replace("/", "_")
            expected, custom = ngclient_download(root, url, tmp_path / "ngclient" / name, target)
            result = tufjs_run(root, f"{url}/metadata/", f"{url}/targets/", tmp_path / "tufjs" / name, target)
            assert result.ok, result.error
            assert result.data == expected, f"tuf-js and ngclient downloaded different bytes for {target}"
            found = repo.find_target(target)
            assert found is not None
            assert (result.sha256, result.length) == (found[1].hashes["sha256"], found[1].length)
            assert result.custom == custom, target
            customs[target] = result.custom
    assert customs[RECORD]["otactl"]["model"] == customs[POLICY]["otactl"]["model"] == MODEL
    assert customs[RECORD]["otactl"]["variant"] == "hp-400"
    # tuf-js walked the succinct delegation: it verified and cached the record's bin, and only that bin
    cached = {p.name for p in (tmp_path / "tufjs" / RECORD.replace("/", "_") / "metadata").iterdir()}
    assert cached == {"root.json", "timestamp.json", "snapshot.json", "targets.json", "devices.json",
                      f"{bin_name}.json"}


def test_tufjs_refuses_a_record_changed_on_disk(ws: Path, tmp_path: Path) -> None:
    root = trust_anchor(ws, tmp_path)
    ctx = open_context(ws)
    found = ctx.repository().find_target(RECORD)
    assert found is not None
    path = Path(ctx.store.root) / layout.target_key(RECORD, found[1].hashes["sha256"])  # type: ignore[attr-defined]
    data = path.read_bytes()
    tampered = data.replace(b"hp-400", b"hp-500")
    assert tampered != data and len(tampered) == len(data)
    path.write_bytes(tampered)
    with served(ctx.store) as url:
        result = tufjs_run(root, f"{url}/metadata/", f"{url}/targets/", tmp_path / "tufjs", RECORD)
        with pytest.raises(AssertionError, match=re.escape(f"tuf-js refused {RECORD} from")):
            tufjs_fetch(root, f"{url}/metadata/", f"{url}/targets/", tmp_path / "tufjs", RECORD)
    assert not result.ok and result.data is None
    assert result.error is not None
    signed_hash = found[1].hashes["sha256"]
    assert result.error.startswith(f"LengthOrHashMismatchError: Expected hash {signed_hash} but got"), result.error
    assert not (tmp_path / "tufjs" / "download" / "target.bin").exists()


def test_tufjs_follows_a_record_re_signed_by_fleet_set(ws: Path, tmp_path: Path) -> None:
    """A device's cached state (the same cache dir) takes the record's new bin version, as ngclient does."""
    root = trust_anchor(ws, tmp_path)
    ctx = open_context(ws)
    cache = tmp_path / "tufjs"
    with served(ctx.store) as url:
        before = tufjs_fetch(root, f"{url}/metadata/", f"{url}/targets/", cache, RECORD)
        ok(run_otactl("fleet", "set", DEVICE, "--variant", "hp-500", cwd=ws))
        after = tufjs_fetch(root, f"{url}/metadata/", f"{url}/targets/", cache, RECORD)
        expected, _ = ngclient_download(root, url, tmp_path / "ngclient", RECORD)
    assert before != after and after == expected
    assert b"hp-500" in after and b"hp-500" not in before
