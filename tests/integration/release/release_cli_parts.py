"""Helpers for the release integration tests: the real CLI, a served repository, a real TUF client."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[2]
if str(TESTS) not in sys.path:  # tests/conftest.py normally puts tests/ on the path
    sys.path.insert(0, str(TESTS))

from fixtures.repo import ok, run_otactl  # noqa: E402
from tuf.ngclient import Updater  # noqa: E402

from otactl.app.context import Context  # noqa: E402
from otactl.repo import layout  # noqa: E402
from otactl.repo.client import HttpxFetcher, make_updater  # noqa: E402
from otactl.repo.serve import served as serve_store  # noqa: E402

REPO_ROOT = TESTS.parent
MANIFESTS = REPO_ROOT / "manifests"
INVENTORY = REPO_ROOT / "examples" / "fleet" / "inventory.csv"
MODEL = "t9-engine"


def otactl(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``otactl ARGS`` in workspace ``ws``, as a CI step runs it (passphrase in the environment)."""
    return run_otactl(*args, cwd=ws)


def otactl_json(ws: Path, *args: str) -> dict[str, Any]:
    return json.loads(ok(otactl(ws, *args, "--output", "json")).stdout)  # type: ignore[no-any-return]


def ship(ws: Path, manifest: Path) -> None:
    """CI build, release-manager approval, publication: three CLI steps."""
    version = manifest.name.removeprefix(f"{MODEL}-").removesuffix(".yaml").removesuffix("-config")
    ok(otactl(ws, "release", "build", str(manifest)))
    ok(otactl(ws, "release", "approve", version, "--key", "release-manager"))
    ok(otactl(ws, "release", "publish", version))


def copy_manifest(tmp_path: Path, name: str, **replace: str) -> Path:
    """A manifests/ file copied with its images into tmp_path, with text replacements."""
    dest = tmp_path / "manifests"
    if not dest.exists():
        shutil.copytree(MANIFESTS / "images", dest / "images")
    text = (MANIFESTS / name).read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (dest / name).write_text(text)
    return dest / name


def published_state(ws: Path) -> dict[str, int]:
    """What a publication would change: the snapshot and timestamp versions."""
    repo = Context.open(ws).repository()
    return {"snapshot": repo.snapshot.signed.version, "timestamp": repo.timestamp.signed.version}


class RecordingFetcher(HttpxFetcher):
    """otactl's httpx fetcher that remembers every URL it fetched."""

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.urls: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.urls.append(url)
        return super()._fetch(url)

    def target_names(self) -> list[str]:
        """Target file names fetched, without their hash prefix."""
        out = []
        for url in self.urls:
            if "/targets/" in url:
                head, _, name = url.split("/targets/", 1)[1].rpartition("/")
                out.append(f"{head}/{name.split('.', 1)[1]}")
        return out


def served(ws: Path) -> contextlib.AbstractContextManager[str]:
    """The workspace's directory store over HTTP on 127.0.0.1."""
    return serve_store(Context.open(ws).store)


@contextmanager
def device(root: bytes, url: str, client_dir: Path) -> Iterator[tuple[Updater, RecordingFetcher]]:
    """A device: python-tuf's ngclient through otactl's HttpxFetcher, trusting ``root``."""
    fetcher = RecordingFetcher()
    try:
        yield make_updater(root, url, client_dir, fetcher), fetcher
    finally:
        fetcher.close()


def download(updater: Updater, path: str, dest: Path) -> bytes:
    info = updater.get_targetinfo(path)
    assert info is not None, f"the client finds no target {path}"
    dest.mkdir(parents=True, exist_ok=True)
    return Path(updater.download_target(info, str(dest / path.replace("/", "_")))).read_bytes()


def root_v1(ws: Path) -> bytes:
    return (ws / "repository" / layout.metadata_key("root", 1)).read_bytes()
