"""``otactl sim run``: load a scenario and run it in its mode (or the one asked for)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from otactl.errors import UsageError
from otactl.sim.scenario import MODES, load_scenario


def run_scenario(
    path: Path,
    *,
    mode: str | None = None,
    devices: int | None = None,
    work_dir: Path | None = None,
    workspace: Path | None = None,
    repo_url: str | None = None,
    ingest_url: str | None = None,
    workers: int | None = None,
    progress: Any = None,
) -> Any:
    """A FullResult or a ModelResult (both have ``to_json``)."""
    scenario = load_scenario(path)
    if mode is not None:
        if mode not in MODES:
            raise UsageError(f"--mode {mode}: must be one of {', '.join(MODES)}")
        scenario = replace(scenario, mode=mode)
    if devices is not None:
        if devices < 1:
            raise UsageError("--devices must be at least 1")
        scenario = replace(scenario, fleet=replace(scenario.fleet, devices=devices,
                                                   lab_devices=min(devices, scenario.fleet.lab_devices)))
    if scenario.mode == "model":
        from otactl.sim.model import run_model

        if workspace or repo_url or ingest_url:
            raise UsageError("--workspace, --repo-url and --ingest-url apply to full mode only")
        return run_model(scenario)
    from otactl.sim.full import run_full

    directory = work_dir or Path(tempfile.mkdtemp(prefix=f"otactl-sim-{scenario.name}-"))
    return run_full(scenario, directory, workspace=workspace, repo_url=repo_url, ingest_url=ingest_url,
                    workers=workers, progress=progress)
