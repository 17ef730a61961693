"""`otactl report fleet`: read the signed fleet, each model's target and the devices' last reports,
then hand them to the pure aggregation (otactl/report/fleet.py). Reads only.

A telemetry source that cannot be read is not an error: the report says so in its sources and lists
the signed fleet with every device ``unknown`` (decision 1103).
"""

from __future__ import annotations

from pathlib import Path

from otactl.agent.decide import choose_release
from otactl.agent.model import RolloutPolicy
from otactl.app.context import Context
from otactl.app.fleet import list_devices, model_releases
from otactl.errors import UsageError
from otactl.repo import layout
from otactl.repo.repository import Repository
from otactl.report import fleet as core

PROMETHEUS_GAP = ("Prometheus holds cohort totals, not each device's reports: give the embedded ingest's "
                  "database, sqlite:PATH")


def _policy(ctx: Context, repo: Repository, model: str) -> RolloutPolicy | None:
    """The model's signed rollout policy as devices read it, or None."""
    from otactl.app.policy import policy_bytes

    data = policy_bytes(ctx, repo, model)
    return None if data is None else RolloutPolicy.from_bytes(data, layout.rollout_path(model))


def _telemetry(spec: str, workspace: Path) -> tuple[dict[str, core.LastReports] | None, core.Source]:
    from otactl.telemetry.last_seen import last_reports
    from otactl.telemetry.query import redact
    from otactl.telemetry.source import TelemetryUnavailable

    scheme, sep, rest = spec.partition(":")
    if scheme == "prometheus" and rest:
        return None, core.Source("telemetry", redact(spec), False, PROMETHEUS_GAP)
    if scheme != "sqlite" or not sep or not rest:
        raise UsageError(f"--telemetry {redact(spec)!r}: expected sqlite:PATH (the embedded ingest's database)")
    path = Path(rest) if Path(rest).is_absolute() else (workspace / rest).resolve()
    try:
        found = last_reports(path)
    except TelemetryUnavailable as exc:
        return None, core.Source("telemetry", f"sqlite:{path}", False, str(exc))
    return found, core.Source("telemetry", f"sqlite:{path}", True, f"last reports of {len(found)} devices")


def fleet_report(ctx: Context, telemetry: str, *, model: str | None, not_seen_days: int) -> core.FleetReport:
    if not_seen_days < 1:
        raise UsageError(f"--not-seen-days {not_seen_days}: give a whole number of days, at least 1")
    repo = ctx.repository()
    fleet = list_devices(ctx)
    records = [r for r in fleet if model is None or r.model == model]  # the devices reported on
    if model is not None and not records:
        raise UsageError(f"model {model!r}: no device of the signed fleet has it")
    targets: dict[str, core.ModelTarget] = {}
    published: dict[str, frozenset[str]] = {}
    policies: dict[str, RolloutPolicy | None] = {}
    for name in sorted({r.model for r in records}):
        releases = model_releases(repo, name)
        published[name] = frozenset() if releases is None else releases.versions
        policies[name] = policy = _policy(ctx, repo, name)
        newest = max(published[name], key=lambda v: core.version_order(v) or (), default=None)
        if policy is not None:
            rings = ", ".join(f"{r.name} {r.release}" for r in policy.rings)
            targets[name] = core.ModelTarget(core.TargetSource.POLICY, None,
                                             f"policy {policy.policy_version} of rollout {policy.rollout_id}: "
                                             f"{rings}; in no ring: baseline {policy.baseline}")
        elif newest is not None:
            targets[name] = core.ModelTarget(core.TargetSource.NEWEST, newest)
        else:
            targets[name] = core.ModelTarget(core.TargetSource.NONE)
    device_targets: dict[str, str | None] = {}
    for r in records:
        policy = policies[r.model]
        if policy is not None:
            device_targets[r.device_id] = choose_release(policy, r.device_id, frozenset(r.tags), r.pin).version
        else:
            device_targets[r.device_id] = r.pin or targets[r.model].release
    last, source = _telemetry(telemetry, ctx.workspace.root)
    signed = core.Source("signed fleet", "repository", True,
                         f"{len(fleet)} device records, verified against the repository's signed metadata")
    return core.build(
        # the whole fleet: a report naming another model than a device's record is a disagreement, not a stranger
        [core.SignedDevice(r.device_id, r.model, r.hardware_revision, r.variant, r.region) for r in fleet],
        last, targets=targets, device_targets=device_targets, published=published, now=ctx.now,
        not_seen_days=not_seen_days, sources=[signed, source], model_filter=model)
