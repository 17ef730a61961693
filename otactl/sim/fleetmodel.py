"""A statistical fleet model: 10k-1M devices as numpy arrays, stepped hour by hour.

It counts exactly as production does: every powered-on device sends one hourly health report,
and the reports go through :func:`otactl.telemetry.counters.health_increments` into per-cohort
counters (release x ring x stratum), from which :class:`SimulatedSource` answers the controller's
``CohortQuery`` as ``counter(until) - counter(since)`` (window counters) or ``counter(until)``
(cumulative ones) with :func:`counters.counts_from_totals`, the code the Prometheus source uses.
A benchmark on the model therefore measures the gates production runs
(docs/decisions/0105-window-additive-counts.md).

What it models (all seeded, all vectorised):

- strata (model x variant x region) with their own base crash and install-failure rates (drawn
  lognormal, or set per stratum), per-device crash multipliers ~ Gamma(k, 1/k) (overdispersion),
  per-device duty cycle (the chance to be powered on in an hour), poll interval and phase, and
  devices offline for the whole rollout;
- a fleet-wide environment factor per trial and a daily fleet-level noise factor, shared by old
  and new release;
- a new release's base rates drift from the old one's (uniform within +-``drift``), and its true
  effects, optionally narrowed to a variant and/or region, optionally starting only after a
  device has run ``after_hours`` on the image;
- rings whose mix is skewed (one stratum over-represented in the early rings), and telemetry
  outages (a ring's or a region's reports held back and delivered when the outage ends, as device
  outboxes do; or the whole source unreachable).

Simplifications: an install lands at the device's first poll after its ring is offered; a failed
install reverts (A/B) and the device reports on the old release from its (exposed) ring.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from otactl.telemetry import counters as ctr
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS: tuple[str, ...] = (*ctr.HEALTH_COUNTERS, "devices", "event:committed", "event:reverted")
_COL = {name: i for i, name in enumerate(COLUMNS)}
_CUMULATIVE = np.array([not n.startswith(ctr.EVENT_PREFIX) and ctr.is_cumulative(n)
                        for n in COLUMNS])


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
    strata_crash: tuple[tuple[str, float], ...] = ()  # "variant/region" -> factor on its base rate
    env_sigma: float = 0.25  # lognormal spread of the fleet-wide environment factor per trial
    daily_sigma: float = 0.0  # lognormal fleet-level noise, a new factor each simulated day
    gamma_shape: float = 0.5  # per-device multiplier ~ Gamma(k, 1/k): variance 1/k
    duty: tuple[float, float] = (2.0, 1.5)  # Beta(a, b): the chance to be powered on in an hour
    poll_hours: float = 6.0  # median poll interval (lognormal, sigma 0.5)
    offline: float = 0.05  # share of devices offline for the whole rollout
    drift: float = 0.15  # a new release's base rates differ by up to this much (uniform)
    skew: tuple[str, float] | None = None  # ("variant/region", f): f times as likely early
    baseline_hours: int = ctr.DISPERSION_LOOKBACK_H  # the fleet's history on the old release


@dataclass(frozen=True)
class Effect:
    """A release's true effect on one metric ("crash" or "install"), optionally narrowed."""

    metric: str
    factor: float
    variant: str | None = None
    region: str | None = None
    after_hours: float = 0.0  # only once the device has run this long on the image


@dataclass(frozen=True)
class Outage:
    """Telemetry lost for a while (hours since the rollout started).

    ``ring`` / ``region``: those devices' reports are held back and arrive when it ends; neither:
    the whole source is unreachable (every query raises ``TelemetryUnavailable``).
    """

    start_h: float
    end_h: float
    ring: str | None = None
    region: str | None = None

    @property
    def source(self) -> bool:
        return self.ring is None and self.region is None


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
        if s.skew is not None:
            hit = self.stratum == self.index(s.skew[0])
            self.bucket[hit] = self.bucket[hit] / s.skew[1]  # over-represented in early rings
        self.duty = rng.beta(*s.duty, size=n)
        self.g = rng.gamma(s.gamma_shape, 1 / s.gamma_shape, size=n)
        self.poll = s.poll_hours * np.exp(rng.normal(0, 0.5, size=n))
        self.phase = rng.random(n) * self.poll
        self.online = (rng.random(n) >= s.offline) | self.lab  # lab devices are always online
        env = np.exp(rng.normal(0, s.env_sigma))
        k = len(self.keys)
        per_stratum = np.exp(rng.normal(0, s.stratum_sigma, size=k))
        for name, factor in s.strata_crash:
            per_stratum[self.index(name)] *= factor
        self.crash_base = s.crash_rate * env * per_stratum
        self.install_base = np.minimum(
            s.install_failure * np.exp(rng.normal(0, s.stratum_sigma, size=k)), 0.5)
        self.daily = np.exp(rng.normal(0, s.daily_sigma, size=400)) if s.daily_sigma else None

    def index(self, name: str) -> int:
        """The stratum ``variant/region`` (or ``model/variant/region``)."""
        for i, k in enumerate(self.keys):
            if name in (f"{k.variant}/{k.region}", str(k)):
                return i
        raise KeyError(f"the fleet has no stratum {name!r}")

    def hits(self, e: Effect) -> np.ndarray:
        """Per stratum: does the effect apply?"""
        return np.array([(e.variant in (None, k.variant)) and (e.region in (None, k.region))
                         for k in self.keys])


class FleetRun:
    """One rollout of a new release over the fleet, stepped in one-hour steps.

    ``ring_of``: each device's ring index in the plan (every device has one: the last ring holds
    100%). The fleet first runs ``spec.baseline_hours`` on the old release (t < 0), so the
    baseline has the history the dispersion estimate reads.
    """

    def __init__(self, fleet: Fleet, effects: tuple[Effect, ...], seed: int,
                 ring_of: np.ndarray, ring_names: tuple[str, ...],
                 outages: tuple[Outage, ...] = (), track_control: bool = True) -> None:
        self.fleet, self.track_control, self.outages = fleet, track_control, outages
        self.rng = np.random.default_rng(seed)
        self.ring_of, self.ring_names = ring_of.astype(np.int64), ring_names
        f, n, d = fleet, fleet.spec.devices, fleet.spec.drift
        self.k, self.r = len(f.keys), len(ring_names)
        self.n_cohorts = 2 * self.r * self.k
        self.rate_old = f.crash_base[f.stratum] * f.g  # crashes per powered-on hour
        self.drift_crash = self.rng.uniform(1 - d, 1 + d)
        install_mult = np.full(self.k, self.rng.uniform(1 - d, 1 + d))
        self.effects = [(e, f.hits(e)[f.stratum]) for e in effects if e.metric == "crash"]
        for e in effects:
            if e.metric == "install":
                install_mult[f.hits(e)] *= e.factor
        self.p_fail = np.minimum(f.install_base * install_mult, 0.9)[f.stratum]
        self.release = np.zeros(n, dtype=np.int64)  # 0: old, 1: new
        self.cohort = self.ring_of * self.k + f.stratum  # + release * r * k
        self.install_at = np.full(n, np.inf)
        self.offered = np.zeros(n, dtype=bool)
        self.failed = np.zeros(n, dtype=bool)
        self.age = np.full(n, 10**8, dtype=np.int64)  # old release: on it for a long time
        self.period_s = (self.rng.random(n) * ctr.PERIOD_S).astype(np.int64)
        self.period_c = np.zeros(n, dtype=np.int64)
        self.joined = np.zeros((2, n), dtype=bool)
        self.totals = np.zeros((self.n_cohorts, len(COLUMNS)))
        self.held = np.zeros_like(self.totals)  # reports held back by an outage
        # the baseline's history (only the gates read it; the baseline policy does not)
        self.t = -float(fleet.spec.baseline_hours if track_control else 0)
        self.history: deque[tuple[float, np.ndarray]] = deque(maxlen=ctr.DISPERSION_LOOKBACK_H + 2)
        self.history_start = self.t
        self.marks: dict[float, np.ndarray] = {}
        self.new_installs = 0
        # the baseline's own install record, from when it shipped (before the history starts)
        shipped = np.flatnonzero(f.online)
        reverted = self.rng.random(shipped.size) < f.install_base[f.stratum[shipped]]
        self._add(self.cohort[shipped[~reverted]], "event:committed",
                  np.ones(int((~reverted).sum())), shipped[~reverted])
        self._add(self.cohort[shipped[reverted]], "event:reverted", np.ones(int(reverted.sum())),
                  shipped[reverted])
        self._snapshot()
        self.mark()  # the history's start: the dispersion window opens here (app.observe)
        while self.t < 0:
            self.step()

    # ------------------------------------------------------------------ driving the rollout
    def offer(self, ring: int) -> None:
        """Offer the release to ring ``ring``'s devices; each installs at its next poll."""
        f = self.fleet
        new = (self.ring_of == ring) & ~self.offered & f.online
        wait = (f.phase[new] - self.t) % f.poll[new]
        self.install_at[new] = self.t + wait
        self.offered |= self.ring_of == ring
        self.mark()

    def mark(self) -> None:
        """Keep the counters of now: a window may start here."""
        self.marks[self.t] = self.totals.copy()

    def now(self) -> datetime:
        return EPOCH + timedelta(hours=self.t)

    def step(self) -> None:
        self.t += 1.0
        f = self.fleet
        due = np.flatnonzero((self.install_at <= self.t) & (self.release == 0) & ~self.failed)
        if due.size:
            bad = self.rng.random(due.size) < self.p_fail[due]
            ok, failed = due[~bad], due[bad]
            self.failed[failed] = True
            self.release[ok] = 1
            self.age[ok] = 0
            self.period_s[ok] = 0
            self.period_c[ok] = 0
            self.new_installs += int(due.size)
            new_cohort = self.r * self.k + self.cohort
            self._add(new_cohort[ok], "event:committed", np.ones(ok.size), ok)
            self._add(new_cohort[failed], "event:reverted", np.ones(failed.size), failed)
        on = f.online & (self.rng.random(f.spec.devices) < f.duty)
        if not self.track_control:
            on &= self.release == 1
        idx = np.flatnonzero(on)
        rate = self.rate_old[idx] * self._noise()
        new = self.release[idx] == 1
        if new.any():
            factor = np.where(new, self.drift_crash, 1.0)
            age_h = self.age[idx] / ctr.HOUR_S
            for e, hit in self.effects:
                factor = np.where(new & hit[idx] & (age_h >= e.after_hours), factor * e.factor,
                                  factor)
            rate = rate * factor
        crashes = self.rng.poisson(rate)
        inc = ctr.health_increments(self.age[idx], self.period_s[idx], self.period_c[idx],
                                    np.full(idx.size, ctr.HOUR_S), crashes)
        self.age[idx], self.period_s[idx], self.period_c[idx] = (inc.age_s, inc.period_s,
                                                                 inc.period_crashes)
        rel = self.release[idx]
        cohort = rel * self.r * self.k + self.cohort[idx]
        first = ~self.joined[rel, idx]
        self.joined[rel[first], idx[first]] = True
        values = {**inc.values, "devices": first * 1}
        held = self._held_mask(idx)
        free = ~held
        c_free = cohort[free] if held.any() else cohort
        for name in COLUMNS[: len(ctr.HEALTH_COUNTERS) + 1]:
            w = np.broadcast_to(np.asarray(values[name], dtype=np.float64), idx.shape)
            self.totals[:, _COL[name]] += np.bincount(
                c_free, weights=w[free] if held.any() else w, minlength=self.n_cohorts)
            if held.any():
                self.held[:, _COL[name]] += np.bincount(cohort[held], weights=w[held],
                                                        minlength=self.n_cohorts)
        if self.held.any() and not self._outage_active():
            self.totals += self.held  # the outboxes flush once the outage is over
            self.held[:] = 0
        self._snapshot()

    def _add(self, cohorts: np.ndarray, name: str, w: np.ndarray, devices: np.ndarray) -> None:
        held = self._held_mask(devices)
        target_free = np.bincount(cohorts[~held], weights=w[~held], minlength=self.n_cohorts)
        self.totals[:, _COL[name]] += target_free
        if held.any():
            self.held[:, _COL[name]] += np.bincount(cohorts[held], weights=w[held],
                                                    minlength=self.n_cohorts)

    def _noise(self) -> float:
        daily = self.fleet.daily
        if daily is None:
            return 1.0
        return float(daily[int(self.t // 24) % len(daily)])

    def _outage_active(self) -> bool:
        return any(o.start_h < self.t <= o.end_h and not o.source for o in self.outages)

    def _held_mask(self, devices: np.ndarray) -> np.ndarray:
        held = np.zeros(devices.size, dtype=bool)
        for o in self.outages:
            if o.source or not o.start_h < self.t <= o.end_h:
                continue
            hit = np.ones(devices.size, dtype=bool)
            if o.ring is not None:
                hit &= self.ring_of[devices] == self.ring_names.index(o.ring)
            if o.region is not None:
                regions = np.array([k.region == o.region for k in self.fleet.keys])
                hit &= regions[self.fleet.stratum[devices]]
            held |= hit
        return held

    def _snapshot(self) -> None:
        self.history.append((self.t, self.totals.copy()))

    # ------------------------------------------------------------------ reading it back
    def totals_at(self, t: float) -> np.ndarray:
        if t in self.marks:
            return self.marks[t]
        for when, totals in self.history:
            if when == t:
                return totals
        if t < self.history_start:
            return np.zeros_like(self.totals)
        raise ValueError(f"no counter snapshot at t={t:g} h (only marks and the last "
                         f"{ctr.DISPERSION_LOOKBACK_H} h are kept)")

    def source_down(self) -> bool:
        return any(o.source and o.start_h < self.t <= o.end_h for o in self.outages)

    def cohort_counts(self, release: int, rings: frozenset[str] | None, since: datetime | None
                      ) -> dict[StratumKey, CohortCounts]:
        """What a production source answers for (release, rings, (since, now])."""
        if self.source_down():
            raise TelemetryUnavailable("simulated telemetry outage: the source is unreachable")
        end = self.totals
        start = (np.zeros_like(end) if since is None
                 else self.totals_at(round((since - EPOCH).total_seconds() / 3600, 6)))
        delta = np.where(_CUMULATIVE[None, :], end, end - start)
        ring_idx = range(self.r) if rings is None else [
            i for i, name in enumerate(self.ring_names) if name in rings]
        out: dict[StratumKey, CohortCounts] = {}
        base = release * self.r * self.k
        for s, key in enumerate(self.fleet.keys):
            rows = [base + i * self.k + s for i in ring_idx]
            v = delta[rows].sum(axis=0)
            counts = ctr.counts_from_totals(
                {n: float(v[j]) for j, n in enumerate(COLUMNS) if not _CUMULATIVE[j]},
                {n: float(v[j]) for j, n in enumerate(COLUMNS) if _CUMULATIVE[j]})
            if counts.reports:
                out[key] = counts
        return out

    def release_totals(self) -> dict[str, float]:
        """The new release's counters over every ring since the rollout began (the baseline
        policy's view: what AWS IoT Jobs' abort criteria read)."""
        v = self.totals[self.r * self.k:].sum(axis=0)
        return {n: float(v[j]) for j, n in enumerate(COLUMNS)}

    def exposed(self) -> int:
        """Devices that installed the release so far (committed or failed)."""
        return self.new_installs


class SimulatedSource(TelemetrySource):
    """A TelemetrySource over a FleetRun: the model's counters, read as production reads them."""

    def __init__(self, run: FleetRun, new_release: str, old_release: str) -> None:
        self.run, self.new, self.old = run, new_release, old_release

    def now(self) -> datetime:
        return self.run.now()

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        if query.until is not None and query.until != self.run.now():
            raise ValueError("the fleet model answers windows that end now")
        release = {self.new: 1, self.old: 0}.get(query.release)
        if release is None:
            return {}
        out = self.run.cohort_counts(release, query.rings, query.since)
        if query.strata is not None:
            out = {k: v for k, v in out.items() if k in query.strata}
        return out
