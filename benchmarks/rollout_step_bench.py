"""The whole `otactl rollout step` command as stored reports grow (issue 10: <= 1 s, flat in stored reports).

``telemetry_step_bench.py`` times the step's four cohort reads in process; this times the command a CI
job runs, start-up, trust file, rollout record, plan, gates and decision included, on SQLite databases
of growing size built by the same production accounting (``telemetry_step_bench.build``: ``ReportStore``
schema, ``Ledger`` and its rollups), ending now. The workspace is real: ``otactl init``, 2.0.0 and 2.1.0
built, approved and published, the fleet imported, and a rollout of 2.1.0 started 48 hours ago (in
process, with the clock set back) whose first ring, 10% of the fleet, is what the databases' last 48
hours report on. Its soak is long, so each step holds: the common step.

Each size is timed with ``farm-bench`` (whole process, median of runs), ``--dry-run`` (nothing written,
so every run sees the same state) paired against the smallest database; one real step per size checks
the same verdict is stored.

    python benchmarks/rollout_step_bench.py --sizes 100000 1000000 3000000 --devices 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from telemetry_step_bench import BASE, MODEL, NEW, STRATA, build

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "rollout-step-bench"
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("OTACTL_")},
       "OTACTL_KEY_PASSPHRASE": PASSPHRASE, "NO_COLOR": "1"}
PLAN = """schema: otactl/canary-plan/1
name: step-bench
strata: [model, variant, region]
rings:
  - name: canary
    selector: {percent: 10}
    soak_device_hours: 100000000   # never soaked: every step holds
    min_reporting_devices: 100
    gates:
      - {metric: install_failure_rate, max_ratio: 1.3, missing: wait}
      - {metric: crash_rate, max_ratio: 1.3, missing: wait}
      - {metric: crash_hour_rate, max_ratio: 1.3, missing: wait}
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def otactl_argv() -> list[str]:
    script = Path(sys.executable).with_name("otactl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "otactl.cli.main"]


def otactl(ws: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run([*otactl_argv(), *args], cwd=ws, env=ENV, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    if proc.returncode not in ok:
        raise SystemExit(f"otactl {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout


def workspace(work: Path, devices: int) -> Path:
    ws = work / "ws"
    otactl(work, "init", str(ws), "--shared-passphrase")
    for version in (BASE, NEW):
        otactl(ws, "release", "build", str(ROOT / "manifests" / f"{MODEL}-{version}.yaml"))
        otactl(ws, "release", "approve", version, "--key", "release-manager")
        otactl(ws, "release", "publish", version)
    inventory = work / "inventory.csv"
    with open(inventory, "w") as fh:
        fh.write("device_id,model,hardware_revision,variant,region,public_key\n")
        for d in range(devices):
            variant, region = STRATA[d % len(STRATA)]
            key = f"{d:064x}"
            fh.write(f"dev-{d:07d},{MODEL},rev{'AB'[d % 2]},{variant},{region},{key}\n")
    otactl(ws, "fleet", "import", str(inventory))
    (work / "plan.yaml").write_text(PLAN)
    os.environ["OTACTL_KEY_PASSPHRASE"] = PASSPHRASE
    from otactl.app import rollout
    from otactl.app.context import Context

    rollout.start(Context.open(ws, now=datetime.now(UTC) - timedelta(hours=48)), MODEL, NEW, work / "plan.yaml",
                  baseline=BASE)
    return ws


def farm_bench(ws: Path, db: Path, small: Path, runs: int) -> str:
    tool = shutil.which("farm-bench")
    step = [*otactl_argv(), "rollout", "step", MODEL, "--dry-run", "--workspace", str(ws)]
    if tool is None:
        return "(farm-bench not on PATH)"
    os.environ.update(ENV)
    proc = subprocess.run([tool, "-n", str(runs), "--timeout", "600",
                           "--vs", " ".join([*step, "--telemetry", f"sqlite:{small}"]),
                           "--", *step, "--telemetry", f"sqlite:{db}"], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="otactl-rollout-step-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"workspace: {args.devices} devices, releases {BASE} and {NEW}, a rollout started 48 h ago")
    ws = workspace(work, args.devices)
    now = datetime.now(UTC)
    dbs = []
    for size in sorted(args.sizes):
        db = work / f"t-{size}.db"
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        _, stored = build(db, args.devices, size, end=now)
        log(f"{stored:,} stored reports in {time.perf_counter() - t0:.0f} s ({db.stat().st_size / 1e6:.0f} MB)")
        dbs.append((stored, db))
    small = dbs[0][1]
    for stored, db in dbs:
        verdict = json.loads(otactl(ws, "rollout", "step", MODEL, "--dry-run", "--telemetry", f"sqlite:{db}",
                                    "--output", "json"))
        print(f"\n### {stored:,} stored reports (dry run: {verdict.get('action')}; "
              f"{'; '.join(verdict.get('reasons', [])[:2])})\n")
        print("```")
        print(farm_bench(ws, db, small, args.runs).rstrip())
        print("```", flush=True)
        copy = work / f"ws-{stored}"
        shutil.copytree(ws, copy, symlinks=True)
        t0 = time.perf_counter()
        otactl(copy, "rollout", "step", MODEL, "--telemetry", f"sqlite:{db}", ok=(0, 3, 4))
        print(f"one real step (holds, stores the verdict): {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
