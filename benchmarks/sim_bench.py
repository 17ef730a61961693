"""Full-fidelity simulation throughput: devices updated per minute.

Each run is the t9-update scenario (examples/scenarios/t9-update.yaml) at a fleet size: every
device is a real agent with its own state directory, refreshing python-tuf metadata over HTTP from
the repository served on 127.0.0.1, downloading and verifying its image and its variant's
configuration, installing into the inactive slot, boot-checking, committing, and posting signed
reports to the embedded ingest - all in this one process, on a bounded thread pool.

Measured per fleet size: the update round (every device 2.0.0 -> 2.1.0: descriptor, image and
configuration downloaded, A/B install, commit, 6 signed reports) and a quiet round (every device
polls, nothing new: a metadata refresh and one health report). Wall time depends on what else the
machine runs; CPU time per device (this process: agents, repository server and ingest together)
much less so.

    python benchmarks/sim_bench.py --devices 100 200 400 --workers 16 --out docs/benchmarks.md

``--out`` rewrites only the "## Device agent and full-fidelity simulation" section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otactl.sim.full import FullSimulation  # noqa: E402
from otactl.sim.scenario import load_scenario  # noqa: E402
from otactl.sim.workspace import SimWorkspace  # noqa: E402

SECTION = "## Device agent and full-fidelity simulation"
SCENARIO = ROOT / "examples" / "scenarios" / "t9-update.yaml"


def run_one(template: Path, base: Path, devices: int, workers: int) -> dict[str, Any]:
    scenario = load_scenario(SCENARIO)
    scenario = dataclasses.replace(scenario, fleet=dataclasses.replace(scenario.fleet, devices=devices),
                                   workers=workers)
    work = base / f"run-{devices}-{workers}"
    shutil.copytree(template, work / "ws", symlinks=True)
    sim = FullSimulation(scenario, work / "sim", workspace=work / "ws")
    load_before = os.getloadavg()[0]
    try:
        result = sim.run()
    finally:
        sim.close()
    update, quiet = result.rounds[1], result.rounds[2]
    assert update.outcomes == {"committed": devices}, update.outcomes
    assert result.reports["signed"] == result.reports["accepted"] == (result.ingest or {}).get("reports")
    shutil.rmtree(work, ignore_errors=True)
    return {
        "devices": devices, "workers": workers,
        "update_s": round(update.seconds, 2),
        "updates_per_min": round(60 * devices / update.seconds),
        "update_cpu_ms_per_device": round(1000 * update.cpu_seconds / devices, 1),
        "quiet_s": round(quiet.seconds, 2),
        "polls_per_min": round(60 * devices / quiet.seconds),
        "poll_cpu_ms_per_device": round(1000 * quiet.cpu_seconds / devices, 1),
        "reports": result.reports["accepted"],
        "load_before": round(load_before, 1),
    }


def markdown(rows: list[dict[str, Any]], argv: list[str]) -> str:
    lines = [
        SECTION, "",
        "Real agents (python-tuf ngclient over httpx, A/B slots on disk, signed reports) against the "
        "repository served on 127.0.0.1 and the embedded ingest, all in one process "
        "(`benchmarks/sim_bench.py`, scenario `examples/scenarios/t9-update.yaml`). *Update*: every device "
        "moves 2.0.0 -> 2.1.0 (release descriptor, image and its variant's configuration downloaded and "
        "verified, installed, boot-checked, committed, 6 reports). *Quiet poll*: nothing new (metadata "
        "refresh, one health report). CPU is this process's (agents, repository server and ingest together) "
        "per device, the figure least sensitive to other load on the machine.", "",
        f"Command: `python benchmarks/sim_bench.py {' '.join(argv)}`", "",
        f"Machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average before each run in the last column.", "",
        "| devices | workers | update round (s) | devices updated / min | CPU ms / update | quiet round (s) "
        "| polls / min | CPU ms / poll | reports accepted | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['workers']} | {r['update_s']} | {r['updates_per_min']} | "
                     f"{r['update_cpu_ms_per_device']} | {r['quiet_s']} | {r['polls_per_min']} | "
                     f"{r['poll_cpu_ms_per_device']} | {r['reports']} | {r['load_before']} |")
    lines += ["", "Where the time goes (cProfile of one agent step): python-tuf re-verifies the trusted "
              "metadata it loads from disk on every refresh (canonical JSON + ed25519 per role), and "
              "ext4 flushes data on every rename over an existing file (ngclient's timestamp, the agent's "
              "state and outbox: an atomic write each). The agent writes its state only when it changed "
              "and its outbox before and after each post to the ingest.", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join([*lines[:start], *text.rstrip("\n").splitlines(), "", *lines[end:]]).rstrip("\n") + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--workers", type=int, nargs="+", default=[16])
    parser.add_argument("--out", type=Path, help="rewrite this file's section with the results")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    os.environ.setdefault("OTACTL_KEY_PASSPHRASE", "sim-bench-throwaway")
    base = Path(tempfile.mkdtemp(prefix="otactl-sim-bench-"))
    try:
        ws = SimWorkspace.create(base / "template")
        ws.ensure_releases(load_scenario(SCENARIO).releases)
        rows = []
        for workers in args.workers:
            for devices in args.devices:
                t0 = time.monotonic()
                row = run_one(base / "template", base, devices, workers)
                rows.append(row)
                print(f"{devices} devices, {workers} workers: {row['updates_per_min']} updates/min "
                      f"({row['update_cpu_ms_per_device']} CPU ms each), {row['polls_per_min']} polls/min "
                      f"[{time.monotonic() - t0:.0f}s]", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    text = markdown(rows, sys.argv[1:])
    if args.out:
        write_section(args.out, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
