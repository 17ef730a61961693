"""A statistical fleet model: 100k-1M devices as numpy arrays, stepped through simulated time.

What it models (all seeded, all vectorised):

- strata (model x variant x region) with their own base crash and install-failure rates;
- per-device crash-rate multipliers ~ Gamma(k, 1/k) (overdispersion: a few devices crash a lot);
- per-device duty cycle (share of hours powered on), poll interval and phase, and devices that stay
  offline for the whole rollout;
- a new release's base rates drift from the old one's (uniform within +-``drift``), and its true
  effect per metric, optionally per variant or per stratum;
- a fleet-wide environment factor per trial (seasons, usage), shared by old and new release.

A :class:`FleetRun` holds one rollout: offer rings at times, :meth:`FleetRun.step` the clock, and
read :class:`CohortCounts` per stratum for the current window (the ring cohort, the concurrent
control) - or wrap it in :class:`SimulatedSource`, a TelemetrySource.

Simplifications: crashes are Poisson given a device's rate (the gamma multipliers make the fleet
negative-binomial); an install lands at the device's first poll after the offer; a failed install
reverts (A/B) and the device leaves both cohorts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey, TelemetrySource

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FleetSpec:
    devices: int = 100_000
    model: str = "t9-engine"
    variants: tuple[tuple[str, float], ...] = (("hp-300", 0.5), ("hp-400", 0.3), ("hp-500", 0.2))
    regions: tuple[tuple[str, float], ...] = (("eu", 0.5), ("us", 0.3), ("apac", 0.2))
    lab_devices: int = 60
    crash_rate: float = 0.01  # crashes per powered-on hour, typical stratum
    install_failure: float = 0.02
    stratum_sigma: float = 0.4  # lognormal spread of base rates across strata
    env_sigma: float = 0.25  # lognormal spread of the fleet-wide environment factor per trial
    gamma_shape: float = 0.5  # per-device multiplier ~ Gamma(k, 1/k): variance 1/k
    duty: tuple[float, float] = (2.0, 1.5)  # Beta(a, b) share of hours powered on
    poll_hours: float = 6.0  # median poll interval (lognormal, sigma 0.5)
    offline: float = 0.05  # share of devices offline for the whole rollout
    drift: float = 0.15  # a new release's base rates differ by up to this much (uniform)


@dataclass(frozen=True)
class Effect:
    """A release's true effect on one metric ("crash" or "install"), optionally narrowed."""

    metric: str
    factor: float
    variant: str | None = None
    region: str | None = None


@dataclass
class Fleet:
    """The devices of one trial, drawn once from a spec and a seed."""

    spec: FleetSpec
    seed: int
    keys: list[StratumKey] = field(init=False)
    stratum: np.ndarray = field(init=False)
    lab: np.ndarray = field(init=False)
    bucket: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        s, rng = self.spec, np.random.default_rng(self.seed)
        n = s.devices
        v_share = np.array([w for _, w in s.variants])
        r_share = np.array([w for _, w in s.regions])
        self.keys = [StratumKey(s.model, v, r) for v, _ in s.variants for r, _ in s.regions]
        probs = np.outer(v_share / v_share.sum(), r_share / r_share.sum()).ravel()
        self.stratum = rng.choice(len(self.keys), size=n, p=probs)
        self.lab = np.zeros(n, dtype=bool)
        self.lab[rng.choice(n, size=s.lab_devices, replace=False)] = True
        self.bucket = rng.random(n)  # uniform like sha256(salt:id); drawn, not hashed, for speed
        self.duty = rng.beta(*s.duty, size=n)
        self.g = rng.gamma(s.gamma_shape, 1 / s.gamma_shape, size=n)
        self.poll = s.poll_hours * np.exp(rng.normal(0, 0.5, size=n))
        self.phase = rng.random(n) * self.poll
        self.online = (rng.random(n) >= s.offline) | self.lab  # lab devices are always online
        env = np.exp(rng.normal(0, s.env_sigma))
        k = len(self.keys)
        self.crash_base = s.crash_rate * env * np.exp(rng.normal(0, s.stratum_sigma, size=k))
        self.install_base = np.minimum(
            s.install_failure * np.exp(rng.normal(0, s.stratum_sigma, size=k)), 0.5)
        self.variant_of = np.array([self.keys.index(k_) // len(s.regions) for k_ in self.keys])
        # how the baseline release fared when it shipped: one install per online device
        per = np.bincount(self.stratum[self.online], minlength=k)
        fails = rng.binomial(per, self.install_base)
        self.install_history = {key: CohortCounts(devices=int(per[i]), installs=int(per[i]),
                                                  install_failures=int(fails[i]))
                                for i, key in enumerate(self.keys)}

    def multipliers(self, effects: tuple[Effect, ...], rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-stratum (crash, install-failure) rate multipliers of a new release: drift x effect."""
        k, d = len(self.keys), self.spec.drift
        crash = np.full(k, rng.uniform(1 - d, 1 + d))
        install = np.full(k, rng.uniform(1 - d, 1 + d))
        for e in effects:
            hit = np.array([(e.variant in (None, key.variant)) and (e.region in (None, key.region))
                            for key in self.keys])
            target = crash if e.metric == "crash" else install
            target[hit] *= e.factor
        return crash, install


class FleetRun:
    """One rollout of a new release over the fleet, stepped in ``dt``-hour steps.

    Fast by construction: crash counts of a cohort are Poisson with the summed rate of its devices
    (exact given the devices' multipliers), kept per stratum; "crashed at least once" uses each
    device's first-crash time, drawn once per window (memoryless, so redrawing at a window start is
    exact). Marginals are exact; the pairing of the two per stratum is approximate.
    """

    def __init__(self, fleet: Fleet, effects: tuple[Effect, ...], seed: int, dt: float = 1.0,
                 track_control: bool = True) -> None:
        self.fleet, self.dt, self.track_control = fleet, dt, track_control
        self.rng = np.random.default_rng(seed)
        crash_mult, install_mult = fleet.multipliers(effects, self.rng)
        f = fleet
        self.k = len(f.keys)
        self.rate_old = f.crash_base[f.stratum] * f.g * f.duty  # crashes per wall hour
        self.rate_new = self.rate_old * crash_mult[f.stratum]
        self.p_fail = np.minimum(f.install_base * install_mult, 0.9)[f.stratum]
        n = len(f.stratum)
        self.t = 0.0
        self.install_at = np.full(n, np.inf)
        self.offered = np.zeros(n, dtype=bool)
        self.installed = np.zeros(n, dtype=bool)  # on the new release (committed)
        self.failed = np.zeros(n, dtype=bool)
        self.first_crash = np.full(n, np.inf)  # wall time of the first crash in the window
        # ring cohort, per stratum: rate and duty sums of installed devices; window accumulators
        self.r_rate = np.zeros(self.k)
        self.r_duty = np.zeros(self.k)
        self.r_devices = np.zeros(self.k, dtype=np.int64)
        self.total = {"installs": 0, "fails": 0, "crashes": 0.0, "hours": 0.0}
        self._ctrl_dirty = True
        self.start_window()

    def start_window(self) -> None:
        self.window_start = self.t
        self.w_crashes = np.zeros(self.k)
        self.w_hours = np.zeros(self.k)
        self.w_installs = np.zeros(self.k, dtype=np.int64)
        self.w_fails = np.zeros(self.k, dtype=np.int64)
        idx = np.flatnonzero(self.installed)
        self.first_crash[idx] = self.t + self.rng.exponential(size=idx.size) / self.rate_new[idx]
        self._ctrl_dirty = True

    def offer(self, mask: np.ndarray) -> None:
        """Offer the release to devices (a ring); each installs at its next poll."""
        new = mask & ~self.offered & self.fleet.online
        f = self.fleet
        wait = (f.phase[new] - self.t) % f.poll[new]
        self.install_at[new] = self.t + wait
        self.offered |= mask
        self._ctrl_dirty = True

    def _rebuild_control(self) -> None:
        f = self.fleet
        ctrl = np.flatnonzero(f.online & ~self.offered)
        s = f.stratum[ctrl]
        rel = self.rng.exponential(size=ctrl.size) / self.rate_old[ctrl]
        self.c_sorted = np.sort(s * 1e9 + np.minimum(rel, 1e8))
        self.c_start = self.t
        self.c_base = np.searchsorted(self.c_sorted, np.arange(self.k) * 1e9)
        self.c_devices = np.bincount(s, minlength=self.k)
        self.c_rate = np.bincount(s, weights=self.rate_old[ctrl], minlength=self.k)
        self.c_duty = np.bincount(s, weights=f.duty[ctrl], minlength=self.k)
        self.c_crashes = np.zeros(self.k)
        self.c_from = self.t
        self._ctrl_dirty = False

    def step(self) -> None:
        if self.track_control and self._ctrl_dirty:
            self._rebuild_control()
        self.t += self.dt
        due = np.flatnonzero((self.install_at <= self.t) & ~self.installed & ~self.failed)
        if due.size:
            s = self.fleet.stratum
            bad = self.rng.random(due.size) < self.p_fail[due]
            ok = due[~bad]
            self.failed[due[bad]] = True
            self.installed[ok] = True
            self.w_installs += np.bincount(s[due], minlength=self.k)
            self.w_fails += np.bincount(s[due[bad]], minlength=self.k)
            self.total["installs"] += int(due.size)
            self.total["fails"] += int(bad.sum())
            self.first_crash[ok] = self.t + self.rng.exponential(size=ok.size) / self.rate_new[ok]
            self.r_rate += np.bincount(s[ok], weights=self.rate_new[ok], minlength=self.k)
            self.r_duty += np.bincount(s[ok], weights=self.fleet.duty[ok], minlength=self.k)
            self.r_devices += np.bincount(s[ok], minlength=self.k)
        # installs land at the end of the step: their hours start with the next one
        if due.size:
            fresh = np.bincount(self.fleet.stratum[due[~bad]], weights=self.rate_new[due[~bad]],
                                minlength=self.k)
            fresh_duty = np.bincount(self.fleet.stratum[due[~bad]],
                                     weights=self.fleet.duty[due[~bad]], minlength=self.k)
        else:
            fresh = fresh_duty = np.zeros(self.k)
        new = self.rng.poisson(np.maximum(self.r_rate - fresh, 0.0) * self.dt)
        self.w_crashes += new
        self.w_hours += np.maximum(self.r_duty - fresh_duty, 0.0) * self.dt
        self.total["crashes"] += float(new.sum())
        self.total["hours"] += float(np.maximum(self.r_duty - fresh_duty, 0.0).sum() * self.dt)
        if self.track_control:
            self.c_crashes += self.rng.poisson(self.c_rate * self.dt)

    def counts(self) -> tuple[dict[StratumKey, CohortCounts], dict[StratumKey, CohortCounts]]:
        """(ring cohort on the new release, control still on the old one) for the window."""
        f = self.fleet
        inst = self.installed
        crashing = np.bincount(f.stratum[inst & (self.first_crash <= self.t)], minlength=self.k)
        ring: dict[StratumKey, CohortCounts] = {}
        for i, key in enumerate(f.keys):
            if self.r_devices[i] or self.w_installs[i]:
                ring[key] = CohortCounts(int(self.r_devices[i]), int(self.w_installs[i]),
                                         int(self.w_fails[i]), int(self.w_crashes[i]),
                                         int(crashing[i]), float(self.w_hours[i]))
        control: dict[StratumKey, CohortCounts] = {}
        if self.track_control and not self._ctrl_dirty:
            elapsed = self.t - self.c_start
            hit = np.searchsorted(self.c_sorted, np.arange(self.k) * 1e9 + elapsed, side="right")
            c_crashing = hit - self.c_base
            for i, key in enumerate(f.keys):
                if self.c_devices[i]:
                    control[key] = CohortCounts(int(self.c_devices[i]), 0, 0,
                                                int(self.c_crashes[i]), int(c_crashing[i]),
                                                float(self.c_duty[i] * elapsed))
        return ring, control

    def exposed(self) -> int:
        """Devices that installed the release so far (committed or failed)."""
        return int(self.total["installs"])


class SimulatedSource(TelemetrySource):
    """A TelemetrySource over a FleetRun: answers the controller's two queries for the window
    (the ring cohort on the new release, the control on the old one)."""

    def __init__(self, run: FleetRun, new_release: str, old_release: str) -> None:
        self.run, self.new, self.old = run, new_release, old_release

    def now(self) -> datetime:
        return EPOCH + timedelta(hours=self.run.t)

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        ring, control = self.run.counts()
        chosen = ring if query.release == self.new else control if query.release == self.old \
            else {}
        if query.strata is not None:
            chosen = {k: v for k, v in chosen.items() if k in query.strata}
        return chosen
