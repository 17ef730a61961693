"""Registers every command group. Each group module keeps its imports light."""

from __future__ import annotations

import importlib

import typer

# (module under otactl.cli, group name or None for top-level commands, help)
GROUPS: list[tuple[str, str | None, str]] = [
    ("init", None, ""),
    ("keys", "keys", "Generate, list and rotate signing keys."),
    ("repo", "repo", "Publish, verify, inspect and refresh the TUF repository."),
    ("release", "release", "Build, review, approve, publish and list releases."),
    ("fleet", "fleet", "Import devices and set their variant, tags and pins (signed records)."),
    ("rollout", "rollout", "Plan, start, step and watch rollouts through canary rings."),
    ("audit", "audit", "Verify and show the signed, hash-chained audit log."),
    ("telemetry", "telemetry", "Run the ingest endpoint and query health telemetry."),
    ("agent", "agent", "Run the device agent."),
    ("sim", "sim", "Simulate a fleet from a scenario file."),
]


def register(app: typer.Typer) -> None:
    for module, name, help_text in GROUPS:
        try:
            mod = importlib.import_module(f"otactl.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"otactl.cli.{module}":
                continue  # group not built yet
            raise
        if name is None:
            mod.register(app)
        else:
            app.add_typer(mod.app, name=name, help=help_text)
