"""Where `otactl init --store` puts the repository, and where later commands find it again."""

from __future__ import annotations

from pathlib import Path

from fixtures.repo import ok, run_otactl


def test_a_plain_relative_store_path_is_where_init_ran_and_is_recorded_absolute(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    ok(run_otactl("init", "ws", "--store", "../shared", "--shared-passphrase", cwd=tmp_path / "a"))
    shared = (tmp_path / "shared").resolve()
    assert (shared / "metadata" / "1.root.json").is_file()
    ws = tmp_path / "a" / "ws"
    assert f"store: file://{shared}\n" in (ws / "otactl.yaml").read_text()
    # later commands find it, run from anywhere
    ok(run_otactl("repo", "verify", "--workspace", str(ws), cwd=tmp_path))
