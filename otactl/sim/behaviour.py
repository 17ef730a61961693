"""Simulated devices' boot checks and health, driven by a scenario's behaviour and release effects.

Deterministic: every draw comes from a generator seeded by (scenario seed, device id, what is
drawn), so the same scenario gives the same fleet behaviour whatever the thread scheduling.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime
from pathlib import Path

import numpy as np

from otactl.agent.conditions import CONDITIONS_FILE
from otactl.agent.health import BootVerdict, HealthSample, integrity_check
from otactl.agent.model import SlotManifest
from otactl.fsutil import atomic_write
from otactl.sim.scenario import Effect, Scenario


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


class SimulatedDevice:
    """The boot check and health probe of one simulated device (pass both to its Agent)."""

    def __init__(self, scenario: Scenario, device_id: str, region: str | None = None) -> None:
        self.scenario = scenario
        self.device_id = device_id
        self.region = region
        self._rng = np.random.default_rng(_seed(scenario.seed, device_id, "health"))
        shape = scenario.behaviour.device_shape
        self.multiplier = (float(np.random.default_rng(_seed(scenario.seed, device_id, "frailty"))
                                 .gamma(shape, 1 / shape)) if shape > 0 else 1.0)
        self.age_h: dict[str, float] = {}  # hours on each version (effects that start late)
        self.hours = 0.0  # hours simulated so far (the fleet's day, for daily noise)

    def effect(self, version: str, variant: str) -> Effect:
        spec = self.scenario.release(version)
        if spec is None:
            return Effect()
        found = spec.effect_for(variant, self.region)
        if found.after_hours and self.age_h.get(version, 0.0) < found.after_hours:
            return Effect(bad_image=found.bad_image, install_failure=found.install_failure)
        return found

    def _daily(self) -> float:
        sigma = self.scenario.behaviour.daily_sigma
        if not sigma:
            return 1.0
        day = int(self.hours // 24)
        return float(np.exp(np.random.default_rng(_seed(self.scenario.seed, "day", day)).normal(0, sigma)))

    def write_conditions(self, device_dir: Path, round_: int) -> None:
        """This round's readings for the agent's install preconditions (``conditions.json``, decision 1202)."""
        b = self.scenario.behaviour
        draw = random.Random(_seed(self.scenario.seed, self.device_id, round_, "conditions"))
        engine, low = draw.random() < b.engine_running, draw.random() < b.low_battery
        doc = {"engine_running": engine, "battery_percent": 20 if low else 90, "in_operation": engine}
        atomic_write(device_dir / CONDITIONS_FILE, json.dumps(doc, sort_keys=True).encode())

    def boot_check(self, slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
        verdict = integrity_check(slot_dir, manifest)
        if not verdict.ok:
            return verdict
        effect = self.effect(manifest.version, manifest.variant)
        if effect.bad_image:
            return BootVerdict(False, f"simulated: {manifest.version} does not boot on {manifest.variant}")
        b = self.scenario.behaviour
        factor = b.stratum(manifest.variant, self.region).install_failure if self.region else 1.0
        chance = min(1.0, b.install_failure * factor * effect.install_failure)
        draw = random.Random(_seed(self.scenario.seed, self.device_id, manifest.version, "boot")).random()
        if draw < chance:
            return BootVerdict(False, "simulated: watchdog reset during the first boot")
        return BootVerdict(True)

    def health(self, active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample:
        b = self.scenario.behaviour
        effect = self.effect(active.version, active.variant)
        hours = b.poll_interval_s / 3600
        base = b.crash_rate * (b.stratum(active.variant, self.region).crash_rate if self.region else 1.0)
        rate = base * self.multiplier * self._daily() * effect.crash_rate
        crashes = int(self._rng.poisson(rate * hours))
        self.age_h[active.version] = self.age_h.get(active.version, 0.0) + hours
        self.hours += hours
        errors = int(self._rng.poisson(b.error_rate * effect.error_rate * hours))
        metrics: dict[str, int | str] = {}
        for m in b.metrics:
            value = m.mean * effect.metric_factor(m.name) + (self._rng.normal(0, m.sd) if m.sd else 0.0)
            metrics[m.name] = round(value) if m.decimals == 0 else f"{value:.{m.decimals}f}"
        return HealthSample(b.poll_interval_s, crashes, errors, metrics)
