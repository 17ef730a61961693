"""Telemetry ingest throughput: signed reports accepted per second over loopback.

Starts the real `otactl telemetry serve` (uvicorn, signature checks on, SQLite store) in its own
process, pre-signs every report (so signing does not load the machine while we measure), then
posts batches from a few client threads and counts what the ingest accepted.

    python benchmarks/ingest_bench.py --devices 2000 --reports 100000 --batch 500 --clients 4 --workers 2

With ``--shards N`` the reports go through `otactl telemetry route` to N `serve --shard I/N`
processes (each its own database) instead; with ``--compare`` one run measures both, one ingest
and router + N shards, the same pre-signed reports, alternating for ``--rounds`` rounds:

    python benchmarks/ingest_bench.py --reports 60000 --clients 2 --shards 2 --compare --rounds 2

Prints reports/s (wall clock) and the servers' CPU time per report (less sensitive to other load).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nacl.signing

from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import Event
from otactl.telemetry.reporter import DeviceReporter

STRATA = [("hp-300", "eu"), ("hp-400", "eu"), ("hp-400", "us"), ("hp-500", "us")]
CYCLE = [Event.OFFERED, Event.DOWNLOADED, Event.INSTALLED, Event.BOOTED, Event.COMMITTED, None]  # None: health


def make_fleet(n: int) -> list[DeviceReporter]:
    reporters = []
    for i in range(n):
        device_id = f"bench-{i:06d}"
        key = nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())
        variant, region = STRATA[i % len(STRATA)]
        device = EnrolledDevice(device_id, "t9-engine", variant, region, bytes(key.verify_key).hex())  # type: ignore[arg-type]
        reporters.append(DeviceReporter(device, key))
    return reporters


def make_bodies(reporters: list[DeviceReporter], total: int, batch: int, clients: int) -> list[list[bytes]]:
    """Request bodies per client. Each client speaks for its own devices (a device's reports must
    arrive in seq order: the ingest refuses a lower seq as a replay), round-robin so that each batch
    mixes devices."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    per_client: list[list[bytes]] = []
    for k in range(clients):
        mine = reporters[k::clients]
        envelopes = []
        for i in range(total // clients + (k < total % clients)):
            r = mine[i % len(mine)]
            step = CYCLE[(i // len(mine)) % len(CYCLE)]
            ring = "canary" if i % 10 == 0 else "early"
            if step is None:
                envelopes.append(r.health("2.1.0", ring, now, uptime_s=3600, crashes=int(i % 97 == 0), errors=1))
            else:
                envelopes.append(r.event("2.1.0", ring, step, now))
        per_client.append(
            [
                json.dumps({"reports": [e.to_json() for e in envelopes[i : i + batch]]}).encode()
                for i in range(0, len(envelopes), batch)
            ]
        )
    return per_client


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (the ingest's worker processes)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_ready(proc: subprocess.Popen[bytes], log: Path, prefix: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(prefix):
                url = line.split(" on ", 1)[1].split(" ", 1)[0]
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{prefix.strip()} did not start:\n{log.read_text()}")


def start_ingest(workdir: Path, reporters: list[DeviceReporter], workers: int,
                 shard: str | None = None) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    devices = workdir / "devices.json"
    devices.write_text(
        json.dumps([
            {"device_id": r.device.device_id, "model": r.device.model, "variant": r.device.variant,
             "region": r.device.region, "public_key": r.device.public_key}
            for r in reporters
        ])
    )  # fmt: skip
    name = "telemetry" if shard is None else f"shard{shard.split('/')[0]}"
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otactl.cli.main", "telemetry", "serve", "--db", str(workdir / f"{name}.db"),
             "--devices", str(devices), "--port", "0", "--workers", str(workers),
             *([] if shard is None else ["--shard", shard])],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return proc, wait_ready(proc, log, "otactl telemetry ingest on ")


def start_router(workdir: Path, urls: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otactl.cli.main", "telemetry", "route",
             *[a for url in urls for a in ("--shard", url)], "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return proc, wait_ready(proc, log, "otactl telemetry router on ")


def post_all(url: str, bodies: list[list[bytes]]) -> tuple[int, int, float]:
    """Each client posts its bodies in order, one at a time; (accepted, refused, wall seconds)."""
    lock = threading.Lock()
    totals = [0, 0]
    errors: list[str] = []

    def worker(mine: list[bytes]) -> None:
        with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as client:
            for body in mine:
                response = client.post(f"{url}/v1/reports", content=body)
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                doc = response.json()
                with lock:
                    totals[0] += doc["accepted"]
                    totals[1] += doc["refused"]

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in bodies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return totals[0], totals[1], elapsed


def measure(reporters: list[DeviceReporter], bodies: list[list[bytes]], workers: int, shards: int) -> dict[str, float]:
    """One ingest (``shards`` 0) or router + ``shards`` shards, fresh databases: what it accepted."""
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if shards == 0:
                proc, url = start_ingest(Path(tmp), reporters, workers)
                procs.append(proc)
            else:
                urls = []
                for i in range(shards):
                    proc, shard_url = start_ingest(Path(tmp), reporters, workers, shard=f"{i}/{shards}")
                    procs.append(proc)
                    urls.append(shard_url)
                proc, url = start_router(Path(tmp), urls)
                procs.append(proc)
            time.sleep(1.0 if workers > 1 else 0)  # every worker up
            cpu0, client0 = [cpu_seconds(p.pid) for p in procs], time.process_time()
            accepted, refused, elapsed = post_all(url, bodies)
            cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
            server_cpu, router_cpu = sum(cpu), (cpu[-1] if shards else 0.0)
            client_cpu = time.process_time() - client0
            load = os.getloadavg()[0]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)
    return {"accepted": accepted, "refused": refused, "seconds": round(elapsed, 3),
            "reports_per_s": round(accepted / elapsed),
            "server_cpu_us_per_report": round(server_cpu / accepted * 1e6, 1),
            "router_cpu_us_per_report": round(router_cpu / accepted * 1e6, 1),
            "client_cpu_us_per_report": round(client_cpu / accepted * 1e6, 1),
            "load_average_1m": round(load, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the ingest (of each shard)")
    parser.add_argument("--shards", type=int, default=0, help="router + this many shards (0: one ingest)")
    parser.add_argument("--compare", action="store_true", help="measure one ingest and router + --shards shards")
    parser.add_argument("--rounds", type=int, default=1, help="with --compare: rounds, alternating the order")
    parser.add_argument("--json", action="store_true", help="print one JSON line per measurement instead of text")
    args = parser.parse_args()
    if args.compare and args.shards < 1:
        parser.error("--compare needs --shards N (N >= 1)")

    reporters = make_fleet(args.devices)
    t0 = time.perf_counter()
    bodies = make_bodies(reporters, args.reports, args.batch, args.clients)
    signing_s = time.perf_counter() - t0
    setups = [0, args.shards] if args.compare else [args.shards]
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in setups}
    for r in range(args.rounds if args.compare else 1):
        for shards in setups if r % 2 == 0 else setups[::-1]:
            result = measure(reporters, bodies, args.workers, shards)
            runs[shards].append(result)
            label = "1 ingest" if shards == 0 else f"router + {shards} shards"
            common = {"setup": label, "reports": args.reports, "devices": args.devices, "batch": args.batch,
                      "clients": args.clients, "workers": args.workers, "presign_seconds": round(signing_s, 1),
                      "cpus": os.cpu_count()}  # fmt: skip
            if args.json:
                print(json.dumps({**common, **result}), flush=True)
            else:
                print(
                    f"{label}: accepted {result['accepted']}/{args.reports} reports ({result['refused']} refused) in "
                    f"{result['seconds']:.2f}s: {result['reports_per_s']} reports/s; CPU per report: servers "
                    f"{result['server_cpu_us_per_report']} us (router {result['router_cpu_us_per_report']} us), "
                    f"load generator {result['client_cpu_us_per_report']} us; "
                    f"1-min load average {result['load_average_1m']} (batch {args.batch}, {args.clients} clients, "
                    f"{args.workers} workers each, {args.devices} devices, {os.cpu_count()} CPUs)", flush=True,
                )  # fmt: skip
            if result["accepted"] != args.reports:
                raise SystemExit("not every report was accepted")
    if args.compare and not args.json:
        def median(xs: list[float]) -> float:
            xs = sorted(xs)
            return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

        one, many = runs[0], runs[args.shards]
        def ratio(key: str) -> float:
            return median([m[key] for m in many]) / median([o[key] for o in one])

        rate, cpu = ratio("reports_per_s"), ratio("server_cpu_us_per_report")
        print(f"router + {args.shards} shards / 1 ingest (medians of {len(one)}): reports/s x{rate:.2f}, "
              f"server CPU per report x{cpu:.2f}")


if __name__ == "__main__":
    main()
