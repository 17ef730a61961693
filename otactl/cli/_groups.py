"""Registers every command group. Each group module keeps its imports light."""

from __future__ import annotations

import importlib

import typer

# (module under otactl.cli, group name or None for top-level commands, help, example)
GROUPS: list[tuple[str, str | None, str, str]] = [
    ("init", None, "", ""),
    ("join", None, "", ""),
    ("keys", "keys", "Generate, list and rotate signing keys.", "otactl keys list"),
    ("repo", "repo", "Publish, verify, inspect and refresh the TUF repository.", "otactl repo status"),
    ("release", "release", "Build, review, approve, publish and list releases.",
     "otactl release build manifests/t9-engine-2.1.0.yaml"),
    ("fleet", "fleet", "Import devices and set their variant, tags and pins (signed records).",
     "otactl fleet import examples/fleet/inventory.csv"),
    ("rollout", "rollout", "Plan, start, step and watch rollouts through canary rings.",
     "otactl rollout status t9-engine"),
    ("audit", "audit", "Verify and show the signed, hash-chained audit log.", "otactl audit verify t9-engine"),
    ("telemetry", "telemetry", "Run the ingest endpoint and query health telemetry.",
     "otactl telemetry query t9-engine 2.1.0"),
    ("report", "report", "Reports on the fleet: what runs where, compliance, disagreements.",
     "otactl report fleet -o html --out fleet.html"),
    ("agent", "agent", "Run the device agent.", "otactl agent status --device-dir dev/t9-0001"),
    ("sim", "sim", "Simulate a fleet from a scenario file.", "otactl sim run examples/scenarios/t9-update.yaml"),
]

def register(app: typer.Typer) -> None:
    for module, name, help_text, example in GROUPS:
        try:
            mod = importlib.import_module(f"otactl.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"otactl.cli.{module}":
                continue  # group not built yet
            raise
        if name is None:
            mod.register(app)
        else:
            app.add_typer(mod.app, name=name, help=f"{help_text}\n\n\b\nExample:\n  {example}",
                          short_help=help_text)
