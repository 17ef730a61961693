"""`otactl telemetry serve|route|query`: run the embedded ingest (or a shard of it, behind a router),
read cohort health counts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from otactl.cli.common import OutputOpt
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)


@app.command("serve")
def serve(
    devices: Annotated[Path, typer.Option("--devices", help="JSON or YAML list of device records (enrolment).")],
    db: Annotated[Path, typer.Option("--db", help="SQLite database, created if absent.")] = Path("telemetry.db"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 8787,
    clock_skew: Annotated[
        int, typer.Option("--clock-skew", min=0, help="Seconds a report's time may run ahead.")
    ] = 300,
    max_body: Annotated[int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")] = 1 << 20,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes sharing the socket and the database.")
    ] = 1,
    entitlement_signers: Annotated[
        Path | None,
        typer.Option("--entitlement-signers", help="The repository's entitlement signers (signing/"
                     "entitlement-signers.json): enroll only records whose entitlement verifies."),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option("--shard", metavar="I/N", help="Be shard I of N (e.g. 0/3): take only the reports of the "
                     "devices that hash to it, refuse the others' (wrong_shard). Each shard has its own --db."),
    ] = None,
) -> None:
    """Run the ingest: POST /v1/reports, GET /metrics (for Prometheus), GET /healthz (Ctrl-C stops it).

    \b
    Example:
      otactl telemetry serve --devices devices.yaml --db telemetry.db --port 8787
      otactl telemetry serve --devices devices.yaml --db shard0.db --port 8801 --shard 0/2
    """
    from datetime import timedelta

    from otactl.telemetry.ingest import IngestLimits
    from otactl.telemetry.server import serve as run
    from otactl.telemetry.shards import Shard

    which = None if shard is None else Shard.parse(shard)
    limits = IngestLimits(max_body_bytes=max_body, clock_skew=timedelta(seconds=clock_skew))
    where = f"database {db}" if which is None else f"database {db}, shard {which}"
    run(db, devices, host, port, workers=workers, limits=limits, entitlement_signers=entitlement_signers,
        shard=which, ready=lambda url: info(f"otactl telemetry ingest on {url} ({where})"),
        warn=lambda text: info(f"warning: {text}"))  # fmt: skip


@app.command("route")
def route(
    shard: Annotated[
        list[str],
        typer.Option("--shard", metavar="URL", help="A shard's base URL, in shard order: the first is shard 0/N "
                     "(repeat once per shard)."),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 8787,
    max_body: Annotated[int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")] = 1 << 20,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a shard before answering 503.")
    ] = 30.0,
) -> None:
    """One address for sharded ingests: split each batch by device shard, forward, merge the results.

    A shard that cannot take its part: 503 with every report's result; devices resend those answered unavailable.

    GET /healthz reports every shard; GET /metrics the router's own counters.

    \b
    Example:
      otactl telemetry route --shard http://10.0.0.1:8787 --shard http://10.0.0.2:8787 --port 8787
    """
    from otactl.telemetry.ingest import IngestLimits
    from otactl.telemetry.router import parse_shard_urls
    from otactl.telemetry.router import serve as run

    urls = parse_shard_urls(shard)
    run(urls, host, port, limits=IngestLimits(max_body_bytes=max_body), timeout=timeout,
        ready=lambda url: info(f"otactl telemetry router on {url} ({len(urls)} shards)"))  # fmt: skip


@app.command("query")
def query(
    model: Annotated[str, typer.Argument(help="Product model, e.g. t9-engine.")],
    release: Annotated[str, typer.Argument(help="Release version, e.g. 2.1.0.")],
    ring: Annotated[list[str] | None, typer.Option("--ring", help="Only these rings (repeatable).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Window start, RFC 3339 (exclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Window end, RFC 3339 (inclusive); default now.")] = None,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            envvar="OTACTL_TELEMETRY_SOURCE",
            help="sqlite:PATH (the ingest's database) or prometheus:URL (Prometheus HTTP API).",
        ),
    ] = "sqlite:telemetry.db",
    output: Output = OutputOpt,
) -> None:
    """Health counts per stratum (model/variant/region) of the devices on a release.

    \b
    Example:
      otactl telemetry query t9-engine 2.1.0 --ring canary --since 2027-03-01T00:00:00Z
    """
    from otactl.telemetry.counters import LATE_AGES
    from otactl.telemetry.query import parse_instant, query_cohort, report_to_json
    from otactl.telemetry.source import CohortQuery

    q = CohortQuery(model, release, rings=frozenset(ring) if ring else None,
                    since=parse_instant("--since", since), until=parse_instant("--until", until))  # fmt: skip
    result = query_cohort(source, q)
    if output is Output.json:
        emit_json("telemetry-counts", report_to_json(result))  # its "schema" (JSON_SCHEMA) replaces the default /1
        return
    everything = [*result.strata.items(), ("total", result.total)]
    rings = ", ".join(sorted(q.rings)) if q.rings else "all rings"
    columns = ["stratum", "reports", "devices", "installs", "failed", "crashes", "device-h", "crash-h",
               "periods"]  # fmt: skip
    rows = [
        [str(k), c.reports, c.devices, c.installs, c.install_failures, c.crashes, f"{c.device_hours:.1f}",
         f"{c.crash_hours:.1f}", c.periods]
        for k, c in everything
    ]  # fmt: skip
    table(f"{model} {release} ({rings}) from {result.source}", columns, rows)
    late = [
        [str(k), f"{age} h", a.devices, f"{a.device_hours:.1f}", a.crashes, f"{a.crash_hours:.1f}"]
        for k, c in everything
        for age in LATE_AGES
        for a in [c.at_age(age)]
    ]
    table("after an age on the image (late failures)",
          ["stratum", "age", "devices past it", "device-h", "crashes", "crash-h"], late)  # fmt: skip
