"""Always-valid (e-value) tests behind the health gates, vectorised over strata and scopes.

Each test returns ``log E``; rejecting when ``E >= 1/alpha`` keeps the false-alarm chance under
``alpha`` however often the gate looks (Ville's inequality), docs/decisions/0101 and 0107.

- :func:`log_e_stratified`: a ring against its concurrent control, stratum by stratum under one
  common ratio (a mixture of likelihood ratios over a grid of ratios beyond the null's boundary).
  Used both ways: "ratio <= max_ratio" (FAIL when rejected) and "ratio >= harm" (the power a PASS
  needs).
- :func:`log_e_single`: one sample against an absolute level (Poisson rate or binomial share).
- :func:`period_dispersion`: overdispersion from closed 24-hour periods (variance-to-mean).
- :func:`common_overdispersion`: the fleet's relative frailty variance ``v`` (``Var = m + v m^2``),
  pooled over groups with their own means (method of moments).
- Intervals for reading: :func:`stratified_ratio` (likelihood interval of the common ratio),
  :func:`poisson_interval`, :func:`proportion_interval` (exact, one look).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import special  # the distributions' inverses; scipy.stats would add ~0.5 s to every `rollout step`

Array = NDArray[np.float64]


def proportion_interval(a: Array, n: Array, level: float = 0.95) -> tuple[Array, Array]:
    q = (1 - level) / 2
    with np.errstate(invalid="ignore"):  # the other branch of each `where` (a = 0, a = n) is not a number
        lo = np.where(a > 0, special.betaincinv(a, n - a + 1, q), 0.0)  # beta.ppf(q, a, n - a + 1)
        hi = np.where(a < n, special.betaincinv(a + 1, n - a, 1 - q), 1.0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def poisson_interval(a: Array, t: Array, level: float = 0.95) -> tuple[Array, Array]:
    q = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(a > 0, special.gammaincinv(a, q), 0.0) / t  # gamma.ppf(q, a)
    hi = special.gammaincinv(a + 1, 1 - q) / t
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


# ----------------------------------------------------------------- stratified mixture e-values
# A scope (the whole ring, a variant, a region, a stratum, late hours) combines the evidence of
# its strata under one common ratio ``r`` (Mantel-Haenszel style), never by pooling counts: in
# stratum s, given a_s + b_s events, a_s ~ Binomial(a_s + b_s, r x_s / (r x_s + 1)) with x_s the
# exposure ratio. The product over strata is an exponential family in log r with statistic
# sum(a_s), so its likelihood ratio is monotone and a mixture over r beyond the null's boundary is
# an e-value for the whole composite null (docs/decisions/0107-stratified-power-gates.md).
GRID_POINTS = 40


def fail_grid(r0: float, detect: float) -> tuple[Array, Array]:
    """log-ratio grid above log r0 and its mixture weights (normal in log r around detect)."""
    theta0, width = np.log(r0), np.log(detect) - np.log(r0)
    theta = theta0 + width * np.linspace(0.05, 4.0, GRID_POINTS)
    logw = -0.5 * ((theta - np.log(detect)) / width) ** 2
    return theta, logw - np.logaddexp.reduce(logw)


def pass_grid(harm: float) -> tuple[Array, Array]:
    """log-ratio grid below log harm and its weights (normal in log r around r = 1)."""
    theta_h = np.log(harm)
    theta = theta_h - theta_h * np.linspace(0.05, 3.0, GRID_POINTS)
    logw = -0.5 * (theta / (theta_h / 2)) ** 2
    return theta, logw - np.logaddexp.reduce(logw)


def _log_lr_ratio(a: Array, n: Array, x: Array, theta: Array, theta0: float) -> Array:
    """Per stratum (rows) and grid point (columns): log L(theta) - log L(theta0)."""
    lx = np.log(np.where(x > 0, x, 1.0))[:, None]
    out: Array = (a[:, None] * (theta[None, :] - theta0)
                  - n[:, None] * (np.logaddexp(0, theta[None, :] + lx) - np.logaddexp(0, theta0 + lx)))
    return out


def log_e_stratified(a: Array, n: Array, x: Array, member: Array, theta: Array, logw: Array,
                     theta0: float) -> Array:
    """log e-value per scope: mixture over ``theta`` of the product of the scope's strata LRs.

    ``a``, ``n``, ``x``: per stratum (quasi-counts: events divided by the dispersion); ``member``:
    scopes x strata, 1 where the stratum belongs to the scope. A stratum with ``n == 0`` or no
    exposure ratio adds nothing.
    """
    ok = (n > 0) & (x > 0)
    lr = np.where(ok[:, None], _log_lr_ratio(a, n, x, theta, theta0), 0.0)
    per_scope = member @ lr  # scopes x grid
    out: Array = np.logaddexp.reduce(per_scope + logw[None, :], axis=1)
    return out


def stratified_ratio(a: Array, n: Array, x: Array, member: Array, level: float = 0.95
                     ) -> tuple[Array, Array, Array]:
    """Common-ratio estimate and likelihood interval per scope (one look, for reading)."""
    theta = np.linspace(-6.0, 6.0, 481)
    ok = (n > 0) & (x > 0)
    lr = np.where(ok[:, None], _log_lr_ratio(a, n, x, theta, 0.0), 0.0)
    ll = member @ lr
    best = ll.max(axis=1, keepdims=True)
    inside = ll >= best - special.chdtri(1, 1 - level) / 2  # chi2.ppf(level, 1)
    est = np.exp(theta[np.argmax(ll, axis=1)])
    lo = np.exp(np.where(inside, theta[None, :], np.inf).min(axis=1))
    hi = np.exp(np.where(inside, theta[None, :], -np.inf).max(axis=1))
    hi = np.where(inside[:, -1], np.inf, hi)  # unbounded above within the grid
    lo = np.where(inside[:, 0], 0.0, lo)
    return est, lo, hi


def log_e_single(a: Array, t: Array, family: str, level: float, theta: Array, logw: Array,
                 theta0: float) -> Array:
    """log e-value per scope for one sample against an absolute level.

    The rate (or share) is ``level * exp(theta)``; the null is ``theta0`` (its boundary), the
    mixture runs over the grid ``theta``. ``family`` "rate": Poisson, ``a`` events over exposure
    ``t``; "share": binomial, ``a`` of ``t`` (shares are capped below 1).
    """
    th = np.log(level) + theta[None, :]
    th0 = np.log(level) + theta0
    if family == "rate":
        lr = a[:, None] * (th - th0) - t[:, None] * (np.exp(th) - np.exp(th0))
    else:
        p = np.minimum(np.exp(th), 1 - 1e-9)
        p0 = min(float(np.exp(th0)), 1 - 1e-9)
        lr = a[:, None] * np.log(p / p0) + (t - a)[:, None] * np.log((1 - p) / (1 - p0))
    out: Array = np.logaddexp.reduce(lr + logw[None, :], axis=1)
    return np.where(t > 0, out, 0.0)


def events_for_power(threshold: float, harm: float, ratio: float = 1.0, phi: float = 1.0) -> float:
    """Roughly how many events an e-value against "ratio >= harm" needs to reach ``threshold``
    when the true ratio is ``ratio`` (normal approximation, with ~1 nat for the mixture)."""
    return 2 * phi * (math.log(threshold) + 1) / (math.log(harm) - math.log(max(ratio, 1.0))) ** 2


def period_dispersion(periods: Array, crashes: Array, crash_sq: Array, minimum: int = 30
                      ) -> Array:
    """Variance-to-mean ratio of crashes per closed 24-hour period (1 when unknown or below)."""
    n = np.maximum(periods, 1)
    mean = crashes / n
    var = (crash_sq / n - mean**2) * n / np.maximum(n - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where((periods >= minimum) & (mean > 0), var / np.where(mean > 0, mean, 1), 1.0)
    return np.asarray(np.maximum(phi, 1.0), dtype=np.float64)


def common_overdispersion(periods: Array, crashes: Array, crash_sq: Array) -> float:
    """The relative overdispersion ``v`` common to every group (``Var(c) = m + v m^2`` per closed
    24-hour period, each group with its own mean ``m``): a moment estimator pooled over groups,
    as for a negative binomial's common dispersion. Groups with fewer than 2 periods add nothing;
    nothing to estimate from gives 0 (Poisson)."""
    n = np.asarray(periods, dtype=np.float64)
    ok = n >= 2
    n, c, q = n[ok], np.asarray(crashes, dtype=np.float64)[ok], np.asarray(crash_sq,
                                                                         dtype=np.float64)[ok]
    if n.size == 0:
        return 0.0
    m = c / n
    s2 = (q - n * m * m) / (n - 1)
    excess = float((n * (s2 - m)).sum())  # sum of n (s^2 - m): estimates v sum n m^2
    scale = float((n * m * m - s2).sum())  # sum of n m^2, less the mean's own sampling variance
    return max(excess / scale, 0.0) if scale > 0 else 0.0
