"""Fleet records at scale: otactl's succinct hash bins against one targets file holding every record.

For each fleet size (default 10k, 100k and 1M devices):

1. ``otactl init --bin-bits B`` with B from ``otactl.fleet.records.recommended_bin_bits`` (about 256
   devices per bin; docs/decisions/0401-device-bin-count.md), release t9-engine 2.0.0 built,
   approved and published, and a rollout policy published — all through the real CLI/services.
2. ``otactl fleet import`` of a generated CSV inventory (the CLI, timed; peak RSS from GNU time).
3. One device's change: ``otactl fleet set`` (the CLI, timed, median of several; and the service
   call alone, in-process).
4. One device (python-tuf ngclient with otactl's HttpxFetcher, against the repository served on
   127.0.0.1) polls as a device agent does: refresh, look up its record and its model's rollout
   policy, download what changed. Bytes it downloads are counted for:
     cold  first start (trust anchor only)
     (a)   a check with nothing new
     (a')  another device's record changed
     (b)   its own record changed
     (c)   a new rollout policy
   "payload" is what ngclient received (metadata and target bodies: HttpxFetcher.bytes_received);
   "wire" is every byte the server sent, HTTP headers and 404 bodies included (ngclient probes for
   the next root each time; a CDN's 404 is smaller than Python's http.server's).
5. The comparison: the same records in ONE delegated role (``devices``, every record in one targets
   file), built with python-tuf's Metadata API here (same record files, same rollout policy, one
   ed25519 key for every role), served and polled the same way. Its own change is timed too
   (re-sign the whole role + snapshot + timestamp).

Run (each fleet size in its own run keeps each under ~10 minutes on a 2-core machine):

    python benchmarks/fleet_bench.py --devices 10000 100000 --json bench-small.json
    python benchmarks/fleet_bench.py --devices 1000000 --json bench-1m.json

Disk: about 6 GB for 1M devices, mostly one 4 KiB block per record file.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from otactl.app import director as director_app
from otactl.app import director_served
from otactl.app import fleet as fleet_app
from otactl.app.context import Context
from otactl.app.policy import publish_policy
from otactl.fleet.records import recommended_bin_bits
from otactl.repo import director, layout
from otactl.repo.canonical import CANONICAL
from otactl.repo.client import HttpxFetcher, make_updater, record_updater
from otactl.repo.serve import Dynamic, StoreHandler

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "t9-engine-2.0.0.yaml"
PLAN = ROOT / "canary" / "default.yaml"
MODEL = "t9-engine"
PASSPHRASE = "fleet-bench-passphrase"
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("OTACTL_")},
       "OTACTL_KEY_PASSPHRASE": PASSPHRASE, "NO_COLOR": "1"}
TIME = "/usr/bin/time" if Path("/usr/bin/time").is_file() else None
COMPACT = JSONSerializer(compact=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def otactl(ws: Path, *args: str) -> tuple[float, int]:
    """Run the real CLI in ``ws``; return (wall seconds, peak RSS KiB or -1)."""
    script = Path(sys.executable).with_name("otactl")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "otactl.cli.main"]
    with tempfile.NamedTemporaryFile(prefix="fleet-bench-rss-") as rss:
        cmd = [TIME, "-f", "%M", "-o", rss.name, *argv, *args] if TIME else [*argv, *args]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ws, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - start
        peak = int(Path(rss.name).read_text().split()[-1]) if TIME and proc.returncode == 0 else -1
    if proc.returncode != 0:
        raise SystemExit(f"otactl {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return wall, peak


def write_inventory(path: Path, n: int) -> list[str]:
    variants, revs, regions = ("hp-300", "hp-400", "hp-500"), ("revA", "revB"), ("eu", "na", "apac")
    ids = []
    with open(path, "w") as fh:
        fh.write("device_id,model,hardware_revision,variant,region,tags,public_key\n")
        for i in range(n):
            dev = f"t9-{i:07d}"
            ids.append(dev)
            key = hashlib.sha256(dev.encode()).hexdigest()  # stands in for the device's ed25519 key
            fh.write(f"{dev},{MODEL},{revs[i % 2]},{variants[i % 3]},{regions[i % 3]},,{key}\n")
    return ids


# ------------------------------------------------------------------------------ serving, counting
class _Counter:
    def __init__(self, inner: Any) -> None:
        self.inner, self.n = inner, 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return int(self.inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingHandler(StoreHandler):
    """otactl's store handler (static files; with chains signed on request, the director service's
    files too), and a log of (path, status, bytes sent including headers) per request."""

    requests: list[tuple[str, int, int]]
    lock: threading.Lock

    def setup(self) -> None:
        super().setup()
        self.wfile = _Counter(self.wfile)  # type: ignore[assignment]
        self._status = 0

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self._status = int(code) if str(code).isdigit() else 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        before = self.wfile.n  # type: ignore[attr-defined]
        super().handle_one_request()
        if getattr(self, "path", None):
            with self.lock:
                self.requests.append((self.path, self._status, self.wfile.n - before))  # type: ignore[attr-defined]


@contextmanager
def serve(directory: Path, dynamic: Dynamic | None = None) -> Iterator[tuple[str, list[tuple[str, int, int]]]]:
    log_: list[tuple[str, int, int]] = []
    handler = type("Handler", (CountingHandler,), {"requests": log_, "lock": threading.Lock(),
                                                   "dynamic": staticmethod(dynamic) if dynamic else None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log_
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Poll:
    payload: int
    wire: int
    requests: int
    client_s: float
    files: list[str] = field(default_factory=list)


class Device:
    """One device agent's TUF side: ngclient with a persistent metadata cache, like a real device."""

    def __init__(self, root: bytes, url: str, log_: list[tuple[str, int, int]], cache: Path, device_id: str):
        self.root, self.url, self.log, self.cache, self.device_id = root, url, log_, cache, device_id

    def poll(self) -> Poll:
        fetcher = HttpxFetcher(timeout=600)
        start_log = len(self.log)
        start = time.perf_counter()
        try:
            updater = make_updater(self.root, self.url, self.cache, fetcher)
            updater.refresh()
            # the agent's own lookup: its director chain once the repository lists one, else the bins
            chain = record_updater(updater, self.url, self.device_id, self.cache, fetcher)
            for source, path in ((chain, layout.device_path(self.device_id)), (updater, layout.rollout_path(MODEL))):
                info = source.get_targetinfo(path)
                assert info is not None, f"{path}: not found by the client"
                dest = str(self.cache / "targets" / path.replace("/", "_"))
                if source.find_cached_target(info, dest) is None:
                    source.download_target(info, dest)
        finally:
            fetcher.close()
        elapsed = time.perf_counter() - start
        reqs = self.log[start_log:]
        files = [f"{p.rsplit('/', 1)[-1]} {n}" if s == 200 else f"{p.rsplit('/', 1)[-1]} (HTTP {s})"
                 for p, s, n in reqs]
        return Poll(fetcher.bytes_received, sum(n for _, _, n in reqs), len(reqs), elapsed, files)


# ------------------------------------------------------------------------- the comparison repository
class OneFileRepo:
    """Every record in one delegated role: root, targets -> devices (all records) + rollouts."""

    def __init__(self, directory: Path, targets_dir: Path, now: datetime) -> None:
        self.dir = directory
        (directory / "metadata").mkdir(parents=True)
        os.symlink(targets_dir, directory / "targets")  # the same record and policy files otactl wrote
        self.signer = CryptoSigner.generate_ed25519()
        self.expires = now + timedelta(days=7)
        key = self.signer.public_key
        root = Root(expires=self.expires, consistent_snapshot=True)
        for role in ("root", "targets", "snapshot", "timestamp"):
            root.add_key(key, role)
        targets = Targets(expires=self.expires)
        targets.delegations = Delegations(keys={}, roles={
            "devices": DelegatedRole("devices", [], 1, True, ["devices/*"]),
            "rollouts": DelegatedRole("rollouts", [], 1, True, ["rollouts/*"]),
        })
        targets.add_key(key, "devices")
        targets.add_key(key, "rollouts")
        self.roles: dict[str, Metadata[Any]] = {
            "root": Metadata(root), "targets": Metadata(targets), "devices": Metadata(Targets(expires=self.expires)),
            "rollouts": Metadata(Targets(expires=self.expires))}
        self.snapshot = Metadata(Snapshot(expires=self.expires))
        self.timestamp = Metadata(Timestamp(expires=self.expires))
        self.snapshot.signed.version = self.timestamp.signed.version = 0
        for md in self.roles.values():
            md.signed.version = 0
        self.publish(*self.roles)

    def root_bytes(self) -> bytes:
        return (self.dir / "metadata" / "1.root.json").read_bytes()

    def publish(self, *changed: str) -> None:
        for name in changed:
            md = self.roles[name]
            md.signed.version += 1
            md.signatures.clear()
            md.sign(self.signer, signed_serializer=CANONICAL)  # the same bytes python-tuf signs, faster
            data = md.to_bytes(COMPACT)
            (self.dir / "metadata" / f"{md.signed.version}.{name}.json").write_bytes(data)
            if name == "root":
                (self.dir / "metadata" / "root.json").write_bytes(data)
            else:  # lengths let ngclient fetch a role bigger than its 5 MB default limit
                self.snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version, length=len(data))
        self.snapshot.signed.version += 1
        self.snapshot.signatures.clear()
        self.snapshot.sign(self.signer, signed_serializer=CANONICAL)
        (self.dir / "metadata" / f"{self.snapshot.signed.version}.snapshot.json").write_bytes(
            self.snapshot.to_bytes(COMPACT))
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self.timestamp.signed.version += 1
        self.timestamp.signatures.clear()
        self.timestamp.sign(self.signer)
        (self.dir / "metadata" / "timestamp.json").write_bytes(self.timestamp.to_bytes(COMPACT))

    def copy_target(self, role: str, tf: TargetFile) -> None:
        self.roles[role].signed.targets[tf.path] = tf

    def size(self, role: str) -> int:
        return (self.dir / "metadata" / f"{self.roles[role].signed.version}.{role}.json").stat().st_size


def otactl_target(ctx: Context, path: str) -> TargetFile:
    found = ctx.repository().find_target(path)
    assert found is not None, path
    return found[1]


# ----------------------------------------------------------------------------------- one fleet size
def bench(n: int, work: Path, set_reps: int, compare: bool, import_only: bool = False,
          device_layout: str = "bins") -> dict[str, Any]:
    bits = recommended_bin_bits(n)
    out: dict[str, Any] = {"devices": n, "bin_bits": bits, "bins": 2**bits, "layout": device_layout}
    base = work / f"fleet-{n}-{device_layout}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    ws = base / "ws"
    log(f"{n} devices ({device_layout}): init, release 2.0.0, rollout policy")
    otactl(base, "init", str(ws), "--bin-bits", str(bits), "--shared-passphrase", "--device-layout", device_layout)
    otactl(ws, "release", "build", str(MANIFEST))
    otactl(ws, "release", "approve", "2.0.0", "--key", "release-manager")
    otactl(ws, "release", "publish", "2.0.0")
    os.environ["OTACTL_KEY_PASSPHRASE"] = PASSPHRASE
    policy = {"model": MODEL, "rollout_id": "t9-engine-2.0.0-bench", "salt": "5eed", "baseline": "2.0.0",
              "rings": [{"name": "all", "selector": {"percent": 100}, "release": "2.0.0"}],
              "bad_releases": [], "min_security_version": 1}
    publish_policy(Context.open(ws), policy)

    inventory = base / "inventory.csv"
    ids = write_inventory(inventory, n)
    log(f"{n} devices: fleet import")
    seconds, peak = otactl(ws, "fleet", "import", str(inventory))
    out["import_s"], out["import_peak_rss_mib"] = seconds, peak / 1024
    log(f"{n} devices: imported in {seconds:.1f} s (peak RSS {peak / 1024:.0f} MiB)")
    seconds, peak = otactl(ws, "rollout", "plan", MODEL, "2.0.0", "--plan", str(PLAN), "--output", "json")
    out["plan_s"], out["plan_peak_rss_mib"] = seconds, peak / 1024
    log(f"{n} devices: rollout plan in {seconds:.1f} s (peak RSS {peak / 1024:.0f} MiB)")
    if import_only:
        return out

    store_dir = ws / "repository"
    me = ids[len(ids) // 2]
    others = [ids[(i * 7919) % n] for i in range(1, set_reps + 1)]
    ctx = Context.open(ws)
    bin_name = ctx.repository().bin_for(layout.device_path(me)) if device_layout == "bins" else None
    polls: dict[str, Poll] = {}
    # chains signed on request: the director service `otactl repo serve` runs (decision 0408), in process
    service = director_served.ChainService(ctx) if device_layout == "director-served" else None
    with serve(store_dir, None if service is None else service.get) as (url, reqs):
        dev = Device((store_dir / "metadata" / "1.root.json").read_bytes(), url, reqs, base / "device-otactl", me)
        polls["cold"] = dev.poll()
        polls["a"] = dev.poll()
        cli_times = [otactl(ws, "fleet", "set", other, "--tag", f"bench{i}")[0] for i, other in enumerate(others)]
        polls["a2"] = dev.poll()
        ctx = Context.open(ws)
        ctx.signers.get("online")  # unlock once: time the service, not the key derivation
        svc_times = []
        for i, other in enumerate(others):
            start = time.perf_counter()
            fleet_app.set_device(ctx, other, variant=None, tags=[f"svc{i}"], pin=None, clear_pin=False)
            svc_times.append(time.perf_counter() - start)
        dev.poll()  # catch up with those changes
        cli_times.append(otactl(ws, "fleet", "set", me, "--tag", "mine")[0])
        polls["b"] = dev.poll()
        policy["rollout_id"] = "t9-engine-2.0.0-bench-2"
        start = time.perf_counter()
        publish_policy(Context.open(ws), policy)
        out["policy_publish_s"] = time.perf_counter() - start
        polls["c"] = dev.poll()
    out["set_cli_s"] = cli_times
    out["set_cli_median_s"] = statistics.median(cli_times)
    out["set_service_median_s"] = statistics.median(svc_times)
    ctx = Context.open(ws)
    repo = ctx.repository()
    out["sizes"] = {
        "timestamp": (store_dir / "metadata" / "timestamp.json").stat().st_size,
        "snapshot": (store_dir / layout.metadata_key("snapshot", repo.snapshot.signed.version)).stat().st_size,
    }
    if bin_name is not None:
        out["sizes"]["bin"] = (store_dir / layout.metadata_key(bin_name, repo.role(bin_name).signed.version)).stat(
            ).st_size
    elif service is not None:  # the chain the service signs for the device now
        version = director_app.Index(ctx).get(me).version  # type: ignore[union-attr]
        out["sizes"]["chain"] = sum(len(service.get(director.device_key(me, role, None if role == "timestamp"
                                                                          else version)) or b"")
                                    for role in ("timestamp", "snapshot", "targets"))
    else:  # the device's own chain: its timestamp, snapshot and targets (one version for all three)
        version = Metadata.from_bytes((store_dir / director.device_key(me, "timestamp", None)).read_bytes()
                                      ).signed.version
        out["sizes"]["chain"] = sum((store_dir / director.device_key(me, role, None if role == "timestamp" else version)
                                     ).stat().st_size for role in ("timestamp", "snapshot", "targets"))
    out["otactl"] = {k: p.__dict__ for k, p in polls.items()}
    log(f"{n} devices: set median {out['set_cli_median_s']:.2f} s (CLI), {out['set_service_median_s']:.3f} s "
        f"(service); polls " + ", ".join(f"{k}={p.payload}" for k, p in polls.items()))

    if compare and device_layout == "bins":
        out["one_file"] = compare_one_file(ctx, base, ids, me, others[0], policy)
    return out


def compare_one_file(ctx: Context, base: Path, ids: list[str], me: str, other: str,
                     policy: dict[str, Any]) -> dict[str, Any]:
    n = len(ids)
    log(f"{n} devices: the one-file comparison repository")
    repo = ctx.repository()
    start = time.perf_counter()
    one = OneFileRepo(base / "one-file", ctx.workspace.root / "repository" / "targets", ctx.now)
    for name in repo.role_names():
        if name.startswith(f"{layout.BIN_PREFIX}-"):
            for tf in repo.role(name).signed.targets.values():
                one.copy_target("devices", tf)
    one.copy_target("rollouts", otactl_target(ctx, layout.rollout_path(MODEL)))
    one.publish("devices", "rollouts")
    result: dict[str, Any] = {"build_s": time.perf_counter() - start}
    polls: dict[str, Poll] = {}

    def change(device_id: str, tag: str) -> float:
        """Change one record (otactl writes the record file), then re-sign the one big role."""
        fleet_app.set_device(ctx, device_id, variant=None, tags=[tag], pin=None, clear_pin=False)
        tf = otactl_target(ctx, layout.device_path(device_id))
        t = time.perf_counter()
        one.copy_target("devices", tf)
        one.publish("devices")
        return time.perf_counter() - t

    with serve(one.dir) as (url, reqs):
        dev = Device(one.root_bytes(), url, reqs, base / "device-one-file", me)
        polls["cold"] = dev.poll()
        polls["a"] = dev.poll()
        result["set_s"] = change(other, "cmp-other")
        polls["a2"] = dev.poll()
        change(me, "cmp-mine")
        polls["b"] = dev.poll()
        policy = {**policy, "rollout_id": f"{policy['rollout_id']}-one-file"}
        publish_policy(ctx, policy)  # writes the new policy document (the same file both repositories list)
        one.copy_target("rollouts", otactl_target(ctx, layout.rollout_path(MODEL)))
        one.publish("rollouts")
        polls["c"] = dev.poll()
    result["devices_role_bytes"] = one.size("devices")
    result["polls"] = {k: p.__dict__ for k, p in polls.items()}
    log(f"{n} devices (one file): role {result['devices_role_bytes']} bytes, change {result['set_s']:.1f} s; polls "
        + ", ".join(f"{k}={p.payload}" for k, p in polls.items()))
    return result


# ------------------------------------------------------------------------------------------- report
def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def poll_cell(poll: dict[str, Any]) -> str:
    return f"{human(poll['payload'])} ({human(poll['wire'])} wire, client {poll['client_s']:.2f} s)"


def report(results: list[dict[str, Any]]) -> str:
    cols = [f"{r['devices']:,} {r.get('layout', 'bins')}" for r in results]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    def bins(r: dict[str, Any]) -> bool:
        return r.get("layout", "bins") == "bins"

    row("bins (`--bin-bits`)", lambda r: f"{r['bins']} ({r['bin_bits']})" if bins(r) else "- (a chain per device)")
    row("`fleet import`, all records", lambda r: f"{r['import_s']:.1f} s, peak RSS {r['import_peak_rss_mib']:.0f} MiB")
    row("`rollout plan` (CLI)", lambda r: f"{r['plan_s']:.1f} s, peak RSS {r['plan_peak_rss_mib']:.0f} MiB"
        if "plan_s" in r else "-")
    row("`fleet set`, one device (CLI, median)", lambda r: f"{r['set_cli_median_s']:.2f} s")
    row("`set_device` service call (median)", lambda r: f"{r['set_service_median_s'] * 1000:.0f} ms")
    row("one file: re-sign after one change", lambda r: f"{r['one_file']['set_s']:.2f} s" if "one_file" in r else "-")
    for key, label in (("cold", "cold start"), ("a", "(a) nothing new"), ("a2", "(a') another device changed"),
                       ("b", "(b) its own record changed"), ("c", "(c) new rollout policy")):
        row(f"{label}", lambda r, k=key: poll_cell(r["otactl"][k]))
        if any("one_file" in r for r in results):
            row(f"{label}: one file", lambda r, k=key: poll_cell(r["one_file"]["polls"][k]) if "one_file" in r else "-")
    row("sizes: timestamp / snapshot / its bin or its chain", lambda r: " / ".join(
        human(r["sizes"][k]) for k in ("timestamp", "snapshot", "bin" if bins(r) else "chain")))
    if any("one_file" in r for r in results):
        row("one file: the devices role", lambda r: human(r["one_file"]["devices_role_bytes"]) if "one_file" in r
            else "-")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--set-reps", type=int, default=5, help="`fleet set` runs per size (median reported)")
    ap.add_argument("--no-compare", action="store_true", help="skip the one-file comparison repository")
    ap.add_argument("--layouts", nargs="+", default=["bins", "director", "director-served"],
                    choices=["bins", "director", "director-served"],
                    help="device layouts to measure side by side (decisions 0401, 0407 and 0408)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--import-only", action="store_true",
                    help="time `fleet import` only (init, release, import; no polls, sets or comparison)")
    args = ap.parse_args()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="otactl-fleet-bench-", dir=args.work) as tmp:
        results = []
        for n in args.devices:
            for device_layout in args.layouts:
                start = time.perf_counter()
                results.append(bench(n, Path(tmp) / str(n), args.set_reps, not args.no_compare, args.import_only,
                                     device_layout))
                results[-1]["bench_s"] = time.perf_counter() - start
                shutil.rmtree(Path(tmp) / str(n), ignore_errors=True)  # millions of small files: not timed
    doc = {"started": started.isoformat(), "seconds": sum(r["bench_s"] for r in results),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "load_average_at_end": os.getloadavg()},
           "results": results}
    if args.import_only:
        for r in results:
            print(f"{r['devices']} devices, {r['layout']}: fleet import {r['import_s']:.1f} s, "
                  f"peak RSS {r['import_peak_rss_mib']:.0f} MiB; rollout plan {r['plan_s']:.1f} s, "
                  f"peak RSS {r['plan_peak_rss_mib']:.0f} MiB")
    else:
        print(report(results))
    print(f"\nrun took {doc['seconds']:.0f} s (without deleting the work files); load average at the end: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
