"""Simulated devices' boot checks and health, driven by a scenario's behaviour and release effects.

Deterministic: every draw comes from a generator seeded by (scenario seed, device id, what is
drawn), so the same scenario gives the same fleet behaviour whatever the thread scheduling.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime
from pathlib import Path

import numpy as np

from otactl.agent.health import BootVerdict, HealthSample, integrity_check
from otactl.agent.model import SlotManifest
from otactl.sim.scenario import Effect, Scenario


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


class SimulatedDevice:
    """The boot check and health probe of one simulated device (pass both to its Agent)."""

    def __init__(self, scenario: Scenario, device_id: str) -> None:
        self.scenario = scenario
        self.device_id = device_id
        self._rng = np.random.default_rng(_seed(scenario.seed, device_id, "health"))

    def effect(self, version: str, variant: str) -> Effect:
        spec = self.scenario.release(version)
        return Effect() if spec is None else spec.effect_for(variant)

    def boot_check(self, slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
        verdict = integrity_check(slot_dir, manifest)
        if not verdict.ok:
            return verdict
        effect = self.effect(manifest.version, manifest.variant)
        if effect.bad_image:
            return BootVerdict(False, f"simulated: {manifest.version} does not boot on {manifest.variant}")
        chance = min(1.0, self.scenario.behaviour.install_failure * effect.install_failure)
        draw = random.Random(_seed(self.scenario.seed, self.device_id, manifest.version, "boot")).random()
        if draw < chance:
            return BootVerdict(False, "simulated: watchdog reset during the first boot")
        return BootVerdict(True)

    def health(self, active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample:
        b = self.scenario.behaviour
        effect = self.effect(active.version, active.variant)
        hours = b.poll_interval_s / 3600
        crashes = int(self._rng.poisson(b.crash_rate * effect.crash_rate * hours))
        errors = int(self._rng.poisson(b.error_rate * effect.error_rate * hours))
        metrics: dict[str, int | str] = {}
        for m in b.metrics:
            value = m.mean * effect.metric_factor(m.name) + (self._rng.normal(0, m.sd) if m.sd else 0.0)
            metrics[m.name] = round(value) if m.decimals == 0 else f"{value:.{m.decimals}f}"
        return HealthSample(b.poll_interval_s, crashes, errors, metrics)
