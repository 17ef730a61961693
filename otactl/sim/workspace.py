"""The simulator's release workspace, driven through the same services as the CLI: init, release
build/approve/publish, fleet import and rollout policies.

Keys: a fresh simulation workspace takes its passphrase from ``OTACTL_KEY_PASSPHRASE`` if set (so
the workspace stays usable after the run), else a random one that is never written anywhere (the
workspace is throwaway). Each key is unlocked once per run, not once per operation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import otactl.keys.keyfile as keyfile
from otactl.app import release as release_svc
from otactl.app.context import Context, utcnow
from otactl.app.fleet import import_devices
from otactl.app.init import init_workspace
from otactl.app.policy import publish_policy
from otactl.errors import NotFoundError
from otactl.release.manifest import load_manifest
from otactl.sim.fleetgen import SimDevice
from otactl.sim.scenario import PolicyStep, ReleaseSpec, Scenario
from otactl.workspace import ROOT_FILE

PASSPHRASE_ENV = "OTACTL_KEY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


@contextlib.contextmanager
def _passphrase_in_env(passphrase: str) -> Iterator[None]:
    """``init_workspace`` reads passphrases from the environment; set ours only while it runs."""
    previous = os.environ.get(PASSPHRASE_ENV)
    os.environ[PASSPHRASE_ENV] = passphrase
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PASSPHRASE_ENV, None)
        else:
            os.environ[PASSPHRASE_ENV] = previous


class SimWorkspace:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def path(self) -> Path:
        return Path(self.ctx.workspace.root)

    @classmethod
    def create(cls, path: Path, *, bin_bits: int = 4) -> SimWorkspace:
        passphrase = os.environ.get(PASSPHRASE_ENV) or secrets.token_urlsafe(24)
        with _passphrase_in_env(passphrase):
            init_workspace(path, store_url=None, endpoint_url=None, release_managers=["release-manager"],
                           approvals=1, bin_bit_length=bin_bits, now=utcnow(), shared_passphrase=True)
        return cls.open(path, passphrase)

    @classmethod
    def open(cls, path: Path, passphrase: str | None = None) -> SimWorkspace:
        """An existing workspace; keys unlock with ``passphrase``, else as the CLI does (env, prompt)."""
        ctx = Context.open(path)
        if passphrase is not None:
            for name, entry in ctx.trust.keys.items():
                scheme, _, rel = ctx.workspace.resolve_uri(entry.uri).partition(":")
                if scheme == keyfile.URI_SCHEME and Path(rel).is_file():
                    kf = keyfile.read_keyfile(Path(rel))
                    ctx.signers.add(name, keyfile.FileSigner(kf.unlock(passphrase), kf.public))
        return cls(ctx)

    def _fresh(self) -> Context:
        self.ctx.now = utcnow()
        return self.ctx

    def trust_anchor(self) -> bytes:
        return (self.path / ROOT_FILE).read_bytes()

    # ------------------------------------------------------------------------------ releases
    def ensure_releases(self, specs: Iterable[ReleaseSpec]) -> list[str]:
        """Build, approve and publish each release not yet published (oldest first); the versions done."""
        done = []
        manifests = sorted((load_manifest(s.manifest) for s in specs),
                           key=lambda m: release_svc.version_key(m.version))
        for manifest in manifests:
            ref = release_svc.ReleaseRef(manifest.model, manifest.version)
            try:
                status = release_svc.info(self._fresh(), ref).status
            except NotFoundError:
                status = release_svc.build(self._fresh(), manifest).status
            if status == "published":
                continue
            for rm in self.ctx.trust.release_managers:
                info = release_svc.info(self._fresh(), ref)
                if info.status != "staged":
                    break
                if rm not in info.signed_by and self.ctx.signers.has_private(rm):
                    release_svc.approve(self._fresh(), str(ref), rm)
            release_svc.publish(self._fresh(), str(ref))
            done.append(manifest.version)
        return done

    # ------------------------------------------------------------------------------ fleet, policy
    def import_fleet(self, devices: list[SimDevice], source: str) -> None:
        import_devices(self._fresh(), [d.record for d in devices], source)

    def publish_step(self, scenario: Scenario, step: PolicyStep) -> int:
        publish_policy(self._fresh(), policy_document(scenario, step))
        return step.round


def policy_document(scenario: Scenario, step: PolicyStep) -> dict[str, Any]:
    """The rollout policy (docs/formats.md) a schedule step stands for."""
    rings = []
    for ring in scenario.rollout.rings:
        on = step.rings is None or ring.name in step.rings
        selector: dict[str, Any] = {"tags": list(ring.tags)} if ring.tags else {"percent": ring.percent}
        rings.append({"name": ring.name, "selector": selector, "release": step.release if on else step.baseline,
                      **scenario.rollout.install.to_json()})
    return {
        "model": scenario.fleet.model,
        "rollout_id": f"sim-{scenario.name}-{step.release}",
        "salt": scenario.rollout.salt,
        "baseline": step.baseline,
        "rings": rings,
        "bad_releases": list(step.bad_releases),
        "min_security_version": step.min_security_version,
    }
