"""Always-valid (e-value) tests behind the health gates, vectorised over strata.

Each function returns ``log E``; rejecting when ``E >= 1/alpha`` keeps the false-alarm chance under
``alpha`` however often the gate looks (Ville's inequality);
see docs/decisions/0101-sequential-gates.md.

- :func:`log_e_binomial`: ``a`` successes in ``n`` trials, ``H0: p <= p0``. The alternative is a
  Beta prior truncated to ``p >= p0`` (so the test is valid for the whole composite null), which
  gives a closed form with ``scipy.stats.betabinom``. Used for a ring against its concurrent control
  (given ``a + b`` events, ``a ~ Binomial(a + b, p)`` with ``p0 = r0*x/(r0*x + 1)``,
  ``x = exposure_ring / exposure_control``) and for proportions against an absolute limit.
- :func:`log_e_poisson`: ``a`` events over exposure ``t``, ``H0: rate <= limit``; Gamma prior
  truncated to ``rate >= limit``, marginal ``scipy.stats.nbinom``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

Array = NDArray[np.float64]

PRIOR_SHAPE = 4.0  # prior shape: its mean sits at the regression to detect, sd about half of it


def _prior_ab(mean: Array) -> tuple[Array, Array]:
    mean = np.clip(mean, 1e-9, 1 - 1e-9)
    return np.full_like(mean, PRIOR_SHAPE), PRIOR_SHAPE * (1 - mean) / mean


def log_e_binomial(a: Array, n: Array, p0: Array, p1: Array) -> Array:
    """log e-value for ``H0: p <= p0`` with prior mean ``p1 > p0``."""
    alpha, beta = _prior_ab(p1)
    with np.errstate(invalid="ignore"):
        out: Array = (stats.betabinom.logpmf(a, n, alpha, beta)
                      + stats.beta.logsf(p0, alpha + a, beta + n - a)
                      - stats.beta.logsf(p0, alpha, beta)
                      - stats.binom.logpmf(a, n, p0))
    # a degenerate null (p0 rounds to 0 or 1: no usable control) is no evidence either way
    return np.where((n > 0) & (np.isfinite(out) | (out == -np.inf)), out, 0.0)


def log_e_poisson(a: Array, t: Array, limit: Array, rate1: Array) -> Array:
    """log e-value for ``H0: rate <= limit`` with prior mean ``rate1 > limit``."""
    shape = PRIOR_SHAPE
    rate = shape / rate1  # Gamma(shape, rate) has mean rate1
    with np.errstate(invalid="ignore"):
        out: Array = (stats.nbinom.logpmf(a, shape, rate / (rate + t))
                      + stats.gamma.logsf(limit, shape + a, scale=1 / (rate + t))
                      - stats.gamma.logsf(limit, shape, scale=1 / rate)
                      - stats.poisson.logpmf(a, limit * t))
    return np.where((t > 0) & (np.isfinite(out) | (out == -np.inf)), out, 0.0)


def ratio_interval(a: Array, n: Array, x: Array, level: float = 0.95) -> tuple[Array, Array]:
    """Exact (Clopper-Pearson, one look) interval of the rate ratio (conditional binomial)."""
    q = (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_p = np.where(a > 0, stats.beta.ppf(q, a, n - a + 1), 0.0)
        hi_p = np.where(a < n, stats.beta.ppf(1 - q, a + 1, n - a), 1.0)
        lo = lo_p / ((1 - lo_p) * x)
        hi = np.where(hi_p < 1, hi_p / ((1 - hi_p) * x), np.inf)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def proportion_interval(a: Array, n: Array, level: float = 0.95) -> tuple[Array, Array]:
    q = (1 - level) / 2
    lo = np.where(a > 0, stats.beta.ppf(q, a, n - a + 1), 0.0)
    hi = np.where(a < n, stats.beta.ppf(1 - q, a + 1, n - a), 1.0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def poisson_interval(a: Array, t: Array, level: float = 0.95) -> tuple[Array, Array]:
    q = (1 - level) / 2
    lo = np.where(a > 0, stats.gamma.ppf(q, a), 0.0) / t
    hi = stats.gamma.ppf(1 - q, a + 1) / t
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def dispersion(crashes: Array, crashing: Array, devices: Array) -> Array:
    """Variance-to-mean ratio of per-device crash counts, estimated from crashing devices.

    Under a gamma-Poisson (negative binomial) fleet, ``P(no crash) = (1 + m/k) ** -k`` where ``m``
    is crashes per device; solving for ``k`` from the share of devices that crashed gives the
    dispersion ``1 + m/k``. Poisson-like data (or too little of it) gives 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(devices > 0, crashes / np.maximum(devices, 1), 0.0)
        f = np.where(devices > 0, crashing / np.maximum(devices, 1), 0.0)
        target = -np.log1p(-np.minimum(f, 1 - 1e-12))  # k * log(1 + m/k) must equal this
        ok = (m > 0) & (target > 0) & (target < m * (1 - 1e-9))
        lo = np.full_like(m, -9.0)  # bisection on log k: k log(1 + m/k) increases with k
        hi = np.full_like(m, 12.0)
        for _ in range(24):  # 21 / 2**24 in log k: far finer than the data
            mid = (lo + hi) / 2
            k = np.exp(mid)
            below = k * np.log1p(np.where(ok, m, 0.0) / k) < target
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        k = np.exp((lo + hi) / 2)
        phi = np.where(ok, 1 + m / k, 1.0)
    return np.asarray(np.maximum(phi, 1.0), dtype=np.float64)
