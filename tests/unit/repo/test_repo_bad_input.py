"""Bad input to init, keys and repo commands (issue 2), through the real CLI.

Each case: the documented exit code, one ``otactl: error:`` line on stderr naming the file, key,
endpoint or role at fault (a ``hint:`` line may follow), no traceback, and nothing half-written:
every watched directory is byte-for-byte unchanged, which also means a failed ``init`` leaves no
workspace and no build directory behind. Bad files live in ``bad_inputs/``.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures.repo import assert_one_error_line, cli_env, run_otactl, tree

BAD = Path(__file__).parent / "bad_inputs"


@dataclass
class Scene:
    """What one case runs, and what it must name and leave untouched."""

    cwd: Path
    argv: list[str]
    names: list[str]
    watch: list[Path]
    env: dict[str, str] = field(default_factory=cli_env)
    max_seconds: float = 60.0


Setup = Callable[[Path, Path], Scene]  # (tmp_path, a fresh copy of the template workspace) -> Scene


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is: nothing listens there


def init_without_passphrase(tmp: Path, ws: Path) -> Scene:
    return Scene(
        tmp / "new",
        ["init", "fresh"],
        ["key 'ci'", "OTACTL_KEY_PASSPHRASE or OTACTL_KEY_PASSPHRASE_CI;", "no TTY"],
        [tmp / "new"],
        env=cli_env(passphrase=None),
    )


def init_with_only_the_shared_passphrase(tmp: Path, ws: Path) -> Scene:
    # root, targets and each release manager's key need their own (decision 1105); the CI secret is not it
    return Scene(
        tmp / "new",
        ["init", "fresh"],
        ["key 'release-manager'", "no passphrase of its own", "OTACTL_KEY_PASSPHRASE_RELEASE_MANAGER", "no TTY"],
        [tmp / "new"],
    )


def init_with_a_private_key_as_a_release_managers_public_key(tmp: Path, ws: Path) -> Scene:
    key = ws / ".otactl/keys/ci.key"
    return Scene(tmp / "new", ["init", "fresh", "--release-manager", f"alice={key}"],
                 [str(key), "is a private key file"], [tmp / "new", ws])


def rotate_without_passphrase(tmp: Path, ws: Path) -> Scene:
    return Scene(
        ws,
        ["keys", "rotate", "timestamp"],
        ["OTACTL_KEY_PASSPHRASE or OTACTL_KEY_PASSPHRASE_TIMESTAMP_2;", "no TTY"],
        [ws],
        env=cli_env(passphrase=None),
    )


def sign_with_wrong_passphrase(tmp: Path, ws: Path) -> Scene:
    return Scene(
        ws,
        ["repo", "refresh", "--force"],
        [str(ws / ".otactl/keys/online.key"), "wrong passphrase"],
        [ws],
        env=cli_env(passphrase="not-the-passphrase"),
    )


def rotate_root_with_wrong_passphrase(tmp: Path, ws: Path) -> Scene:
    # the new key is made first; when the old root key will not unlock, it must be removed again
    return Scene(
        ws,
        ["keys", "rotate", "root"],
        [str(ws / ".otactl/keys/root-1.key"), "wrong passphrase"],
        [ws],
        env=cli_env(passphrase="not-the-passphrase"),
    )


def with_key_file(bad: str) -> Setup:
    def setup(tmp: Path, ws: Path) -> Scene:
        shutil.copyfile(BAD / bad, ws / ".otactl/keys/online.key")
        return Scene(
            ws, ["repo", "refresh", "--force"], [str(ws / ".otactl/keys/online.key"), "not an otactl key file"], [ws]
        )

    return setup


def init_with_unreachable_s3(tmp: Path, ws: Path) -> Scene:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    return Scene(
        tmp / "new",
        ["init", "fresh", "--store", "s3://otactl-test/repo", "--s3-endpoint-url", endpoint],
        [endpoint, "cannot reach"],
        [tmp / "new"],
        # credentials are fine: the endpoint is what is at fault
        env=cli_env(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        ),
        max_seconds=20,
    )


def init_into_non_empty_dir(tmp: Path, ws: Path) -> Scene:
    (tmp / "new" / "fresh").mkdir(parents=True)
    (tmp / "new" / "fresh" / "notes.txt").write_text("mine\n")
    return Scene(tmp / "new", ["init", "fresh"], [str(tmp / "new" / "fresh"), "not empty"], [tmp / "new"])


def init_over_a_workspace(tmp: Path, ws: Path) -> Scene:
    return Scene(ws.parent, ["init", ws.name], [str(ws), "not empty"], [ws.parent])


def init_into_a_store_in_use(store_arg: Callable[[Path], str]) -> Setup:
    def setup(tmp: Path, ws: Path) -> Scene:
        (tmp / "new").mkdir()
        return Scene(
            tmp / "new",
            ["init", "fresh", "--store", store_arg(ws / "repository")],
            [str(ws / "repository"), "already holds a"],
            [tmp / "new", ws],
        )

    return setup


def with_trust_file(bad: str) -> Setup:
    def setup(tmp: Path, ws: Path) -> Scene:
        shutil.copyfile(BAD / bad, ws / "signing/trust.yaml")
        return Scene(ws, ["repo", "status"], [], [ws])

    return setup


def rotate_unknown_role(tmp: Path, ws: Path) -> Scene:
    return Scene(ws, ["keys", "rotate", "bogus-role"], ["'bogus-role'"], [ws])


CASES = [
    pytest.param(init_without_passphrase, 1, [], id="init-missing-passphrase-no-tty"),
    pytest.param(init_with_only_the_shared_passphrase, 1, [], id="init-root-and-managers-need-their-own"),
    pytest.param(init_with_a_private_key_as_a_release_managers_public_key, 1, [], id="init-private-key-as-public"),
    pytest.param(rotate_without_passphrase, 1, [], id="rotate-missing-passphrase-no-tty"),
    pytest.param(sign_with_wrong_passphrase, 1, [], id="wrong-passphrase"),
    pytest.param(rotate_root_with_wrong_passphrase, 1, [], id="rotate-root-wrong-passphrase"),
    pytest.param(with_key_file("corrupt.key"), 1, [], id="corrupt-key-file"),
    pytest.param(with_key_file("foreign.key"), 1, [], id="foreign-key-file"),
    pytest.param(init_with_unreachable_s3, 1, [], id="unreachable-s3-store"),
    pytest.param(init_into_non_empty_dir, 2, [], id="init-non-empty-directory"),
    pytest.param(init_over_a_workspace, 2, [], id="init-existing-workspace"),
    pytest.param(init_into_a_store_in_use(lambda p: f"file://{p}"), 1, [], id="store-in-use-file-url"),
    pytest.param(init_into_a_store_in_use(str), 1, [], id="store-in-use-plain-path"),
    pytest.param(
        with_trust_file("trust-misspelt-field.yaml"),
        2,
        ["trust.yaml:42:", "roles.releases.treshold", "unknown key"],
        id="trust-misspelt-field",
    ),
    pytest.param(
        with_trust_file("trust-bad-threshold.yaml"),
        2,
        ["trust.yaml:42:", "roles.releases.threshold", "from 1 to 2"],
        id="trust-bad-threshold",
    ),
    pytest.param(
        with_trust_file("trust-undefined-key.yaml"),
        2,
        ["trust.yaml:41:", "roles.releases.keys.1", "'release-manger'"],
        id="trust-undefined-key",
    ),
    pytest.param(rotate_unknown_role, 2, [], id="rotate-unknown-role"),
]


@pytest.mark.parametrize(("setup", "exit_code", "also_names"), CASES)
def test_bad_input_fails_cleanly(
    setup: Setup, exit_code: int, also_names: list[str], workspace: Path, tmp_path: Path
) -> None:
    scene = setup(tmp_path, workspace)
    scene.cwd.mkdir(parents=True, exist_ok=True)
    before = {str(p): tree(p) for p in scene.watch}
    started = time.monotonic()
    result = run_otactl(*scene.argv, cwd=scene.cwd, env=scene.env)
    elapsed = time.monotonic() - started
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert_one_error_line(result, *scene.names, *also_names)
    assert {str(p): tree(p) for p in scene.watch} == before
    assert elapsed < scene.max_seconds
