"""Gate decisions and their evidence, read from the verdicts the controller recorded, put in words.

A verdict is the JSON the controller stored with each step (``otactl.app.rollout.verdict_json`` of a
``RingVerdict``). It is read field by field and tolerantly (a value that is not a number reads as
n/a): it came from the store, so every string in it is untrusted text for the renderers to escape.

The words are the release manager's reading of one evidence row, e.g.::

    crash rate 1.9x the control (95% interval 1.2-3.1), above the tolerated 1.5x: rolled back
    crash rate: needs ~1,800 more device-hours before it can pass
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otactl.rollout.metrics import METRICS
from otactl.rollout.plan import Metric

OUTCOME_WORDS = {"rollback": "rolled back", "pause": "paused", "advance": "advanced", "complete": "completed",
                 "hold": "holding", "await_approval": "awaiting approval"}


def number(x: Any) -> float | None:
    """A stored number (the JSON form writes infinities as "inf"); None for anything else or NaN."""
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        return None
    try:
        value = float(x)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def text(x: Any) -> str:
    return "" if x is None else str(x)


def fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def times(x: float | None) -> str:
    """A ratio with two significant figures: 1.0 -> "1.0", 1.94 -> "1.9", 12.3 -> "12"."""
    if x is None or math.isinf(x):
        return fmt(x)
    text = f"{x:.2g}"
    return f"{x:.1f}" if "e" not in text and "." not in text and abs(x) < 10 else text


def about(x: float) -> str:
    """Two significant figures with thousands separators: 1834 -> "1,800"."""
    if x < 10:
        return f"{x:.1f}".removesuffix(".0")
    digits = len(str(int(x)))
    return f"{round(x, -(digits - 2)):,.0f}"


@dataclass(frozen=True)
class EvidenceRow:
    metric: str
    scope: str
    test: str  # control, limit, power-control, power-limit
    phase: str
    margin: float | None  # control: the tolerated max_ratio; limit: the limit; power: the harm ruled out
    events: float | None
    exposure: float | None
    rate: float | None
    reference_rate: float | None
    ratio: float | None
    interval: tuple[float, float] | None
    e_value: float | None
    threshold: float | None
    needs: float | None
    note: str

    @property
    def unit(self) -> str:
        try:
            return METRICS[Metric(self.metric)].unit
        except ValueError:
            return "units of exposure"

    @property
    def label(self) -> str:
        return self.metric.replace("_", " ")

    def words(self, outcome: str | None = None) -> str:
        """This row as a sentence; ``outcome``: what the decision did (rolled back, paused, ...)."""
        where = "" if self.scope in ("overall", "") else f" in {self.scope}"
        what = f"{self.label}{where}"
        then = f": {outcome}" if outcome else ""
        iv = ("" if self.interval is None else
              f" (95% interval {times(self.interval[0])}-{times(self.interval[1])})")
        if self.note and self.ratio is None:
            return f"{what}: {self.note}"
        if self.test == "control":
            side = "above" if self.phase == "fail" else "not shown above"
            return (f"{what} {times(self.ratio)}x the control{iv}, {side} the tolerated "
                    f"{fmt(self.margin, 'g')}x{then if self.phase == 'fail' else ''}")
        if self.test == "limit":
            side = "above" if self.phase == "fail" else "not shown above"
            return (f"{what} {fmt(self.rate)} per {self.unit.removesuffix('s')}, {times(self.ratio)}x the limit "
                    f"{fmt(self.margin, 'g')}{iv}, {side} it{then if self.phase == 'fail' else ''}")
        vs = "vs the control" if self.test == "power-control" else "vs the limit"
        if self.phase == "pass":
            return f"{what}: a {fmt(self.margin, 'g')}x regression {vs} is ruled out"
        if self.needs is not None:
            return (f"{what}: needs ~{about(self.needs)} more {self.unit} before it can pass (to rule out a "
                    f"{fmt(self.margin, 'g')}x regression {vs}; now {times(self.ratio)}x)")
        return (f"{what}: cannot pass while the observed ratio stays this high ({times(self.ratio)}x, "
                f"harm {fmt(self.margin, 'g')}x {vs})")


@dataclass(frozen=True)
class GateRow:
    metric: str
    phase: str
    reason: str
    evidence: tuple[EvidenceRow, ...]


@dataclass(frozen=True)
class Decision:
    """One gate decision: a step's verdict and what the controller did with it."""

    time: datetime
    ring: str
    action: str  # advance, complete, rollback, pause, or hold (the latest verdict, not a transition)
    actor: str | None  # who signed the transition (None: a hold, recorded without an audit entry)
    recorded: bool  # a transition with an audit entry (a hold only updates the state's last verdict)
    phase: str | None  # the verdict: pass, wait, fail (None: no verdict was kept)
    devices: int | None
    device_hours: float | None
    since: str
    until: str
    reasons: tuple[str, ...]
    gates: tuple[GateRow, ...]

    @property
    def outcome(self) -> str:
        return OUTCOME_WORDS.get(self.action, self.action)

    def words(self) -> list[str]:
        """The decision in sentences: the failing rows (with what was done), else the overall ones,
        and what the ring still waits for (soak, reporting devices)."""
        rows = [e for g in self.gates for e in g.evidence]
        failed = [e for e in rows if e.phase == "fail"]
        shown = failed or [e for e in rows if e.scope in ("overall", "")]
        out = [e.words(self.outcome) for e in shown]
        gate_reasons = {g.reason for g in self.gates}
        out += [r for r in self.reasons if r not in gate_reasons and not r.startswith("soak done")]
        return out


def _evidence(metric: str, raw: Any) -> EvidenceRow | None:
    if not isinstance(raw, dict):
        return None
    iv = raw.get("interval")
    interval = None
    if isinstance(iv, list | tuple) and len(iv) == 2:
        lo, hi = number(iv[0]), number(iv[1])
        interval = None if lo is None or hi is None else (lo, hi)
    return EvidenceRow(metric, text(raw.get("scope")), text(raw.get("test")), text(raw.get("phase")),
                       number(raw.get("margin")), number(raw.get("events")), number(raw.get("exposure")),
                       number(raw.get("rate")), number(raw.get("reference_rate")), number(raw.get("ratio")),
                       interval, number(raw.get("e_value")), number(raw.get("threshold")), number(raw.get("needs")),
                       text(raw.get("note")))


def gates_of(verdict: Mapping[str, Any] | None) -> tuple[GateRow, ...]:
    gates = verdict.get("gates") if isinstance(verdict, Mapping) else None
    out = []
    for g in gates if isinstance(gates, list) else []:
        if not isinstance(g, dict):
            continue
        metric = text(g.get("metric"))
        raw = g.get("evidence")
        rows = [_evidence(metric, e) for e in (raw if isinstance(raw, list) else [])]
        out.append(GateRow(metric, text(g.get("phase")), text(g.get("reason")), tuple(r for r in rows if r)))
    return tuple(out)


def decision(time: datetime, ring: str, action: str, actor: str | None, verdict: Mapping[str, Any] | None,
             reasons: Sequence[str] = (), *, recorded: bool | None = None) -> Decision:
    """A decision from a stored verdict (None: none kept, e.g. a record from before revisions);
    ``recorded``: a transition (default: when it has an actor, its audit entry's signer)."""
    v = verdict if isinstance(verdict, Mapping) else {}
    stored = v.get("reasons")
    why = tuple(str(r) for r in stored) if isinstance(stored, list) else tuple(reasons)
    devices = number(v.get("devices"))
    return Decision(time, ring, action, actor, actor is not None if recorded is None else recorded,
                    text(v.get("phase")) or None,
                    None if devices is None else int(devices), number(v.get("device_hours")),
                    text(v.get("since")), text(v.get("until")), why, gates_of(v))


def decisions_json(decisions: Sequence[Decision]) -> list[dict[str, Any]]:
    def num(x: float | None) -> float | str | None:
        return None if x is None else ("inf" if math.isinf(x) else x)

    return [{
        "time": d.time.isoformat().replace("+00:00", "Z"), "ring": d.ring, "action": d.action, "actor": d.actor,
        "recorded": d.recorded, "verdict": d.phase, "devices": d.devices, "device_hours": d.device_hours,
        "window": {"since": d.since, "until": d.until}, "reasons": list(d.reasons), "words": d.words(),
        "gates": [{"metric": g.metric, "phase": g.phase, "reason": g.reason, "evidence": [{
            "scope": e.scope, "test": e.test, "phase": e.phase, "margin": num(e.margin), "events": num(e.events),
            "exposure": num(e.exposure), "rate": num(e.rate), "reference_rate": num(e.reference_rate),
            "ratio": num(e.ratio), "interval": None if e.interval is None else [num(x) for x in e.interval],
            "e_value": num(e.e_value), "threshold": num(e.threshold), "needs": num(e.needs), "note": e.note,
            "words": e.words(d.outcome)} for e in g.evidence]} for g in d.gates],
    } for d in decisions]  # fmt: skip
