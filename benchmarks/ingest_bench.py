"""Telemetry ingest throughput: signed reports accepted per second over loopback.

Starts the real `otactl telemetry serve` (uvicorn, signature checks on, SQLite store) in its own
process, pre-signs every report (so signing does not load the machine while we measure), then
posts batches from a few client threads and counts what the ingest accepted.

    python benchmarks/ingest_bench.py --devices 2000 --reports 100000 --batch 500 --clients 4 --workers 2

Prints reports/s (wall clock) and the server's CPU time per report (less sensitive to other load).
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


def start_ingest(workdir: Path, reporters: list[DeviceReporter], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    devices = workdir / "devices.json"
    devices.write_text(
        json.dumps([
            {"device_id": r.device.device_id, "model": r.device.model, "variant": r.device.variant,
             "region": r.device.region, "public_key": r.device.public_key}
            for r in reporters
        ])
    )  # fmt: skip
    log = workdir / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otactl.cli.main", "telemetry", "serve", "--db", str(workdir / "telemetry.db"),
             "--devices", str(devices), "--port", "0", "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("otactl telemetry ingest on "):
                url = line.split(" on ", 1)[1].split(" ", 1)[0]
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the ingest did not start:\n{log.read_text()}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()

    reporters = make_fleet(args.devices)
    t0 = time.perf_counter()
    bodies = make_bodies(reporters, args.reports, args.batch, args.clients)
    signing_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        proc, url = start_ingest(Path(tmp), reporters, args.workers)
        time.sleep(1.0 if args.workers > 1 else 0)  # every worker up
        try:
            cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
            accepted, refused, elapsed = post_all(url, bodies)
            server_cpu, client_cpu = cpu_seconds(proc.pid) - cpu0, time.process_time() - client0
            load = os.getloadavg()[0]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    result = {
        "reports": args.reports, "accepted": accepted, "refused": refused, "devices": args.devices,
        "batch": args.batch, "clients": args.clients, "workers": args.workers, "seconds": round(elapsed, 3),
        "reports_per_s": round(accepted / elapsed), "server_cpu_us_per_report": round(server_cpu / accepted * 1e6, 1),
        "client_cpu_us_per_report": round(client_cpu / accepted * 1e6, 1), "load_average_1m": round(load, 1),
        "presign_seconds": round(signing_s, 1), "cpus": os.cpu_count(),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"accepted {accepted}/{args.reports} reports ({refused} refused) in {elapsed:.2f}s: "
            f"{result['reports_per_s']} reports/s; CPU per report: server {result['server_cpu_us_per_report']} us, "
            f"load generator {result['client_cpu_us_per_report']} us; 1-min load average {load:.1f} "
            f"(batch {args.batch}, {args.clients} clients, {args.workers} workers, {args.devices} devices, "
            f"{os.cpu_count()} CPUs)"
        )
    if accepted != args.reports:
        raise SystemExit("not every report was accepted")


if __name__ == "__main__":
    main()
