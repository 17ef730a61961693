"""Image hashing: otactl.release.hashing.hash_file against coreutils ``sha256sum`` on the same file.

Both run as child processes on the same file in the page cache, in alternating order, several times;
the report gives each one's median and the throughput ratio (``sha256sum`` time / ``hash_file`` time:
1.0 means as fast, the goal is >= 0.8). The ``hash_file`` child times only the call (not the
interpreter's start-up); ``sha256sum``'s time includes its (millisecond) start-up.

Memory: the peak resident set (the child's ``ru_maxrss``, read by GNU time, whose small process forks
the child) of a child that imports otactl and hashes a 64 MiB and a 1 GiB image, beside a naive
``hashlib.sha256(path.read_bytes())`` child and ``sha256sum``: hash_file's memory does not grow with
the image. ``openssl dgst -sha256`` runs beside them when installed, as a second native baseline.

Run: python benchmarks/hash_bench.py [--size-mib 1024] [--small-mib 64] [--reps 7] [--dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME = "/usr/bin/time" if Path("/usr/bin/time").is_file() else None

HASH_FILE_CHILD = """
import sys, time
from pathlib import Path
from otactl.release.hashing import hash_file
t = time.perf_counter()
length, sha = hash_file(Path(sys.argv[1]))
print(time.perf_counter() - t, length, sha)
"""

NAIVE_CHILD = """
import hashlib, sys, time
from pathlib import Path
t = time.perf_counter()
data = Path(sys.argv[1]).read_bytes()
print(time.perf_counter() - t, len(data), hashlib.sha256(data).hexdigest())
"""


def make_image(path: Path, mib: int) -> None:
    """Incompressible bytes (a 1 MiB random block, varied per MiB so no two blocks are equal)."""
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for i in range(mib):
            fh.write(i.to_bytes(8, "big") + block[8:])


def run_child(argv: list[str]) -> tuple[float, str, int]:
    """Run a child; return (wall seconds, stdout, its peak RSS in KiB).

    The peak comes from GNU time's ``%M`` (its small forked process then execs the child), not from
    ``wait4``: a child forked from this Python process would report this process's RSS as a floor.
    """
    with tempfile.NamedTemporaryFile(prefix="otactl-hash-bench-rss-") as rss_file:
        cmd = [TIME, "-f", "%M", "-o", rss_file.name, *argv] if TIME else argv
        start = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        wall = time.perf_counter() - start
        rss = int(Path(rss_file.name).read_text().split()[-1]) if TIME else -1
    return wall, out, rss


def time_hash_file(path: Path) -> tuple[float, str, int]:
    _, out, rss = run_child([sys.executable, "-c", HASH_FILE_CHILD, str(path)])
    seconds, _, sha = out.split()
    return float(seconds), sha, rss


def time_sha256sum(path: Path) -> tuple[float, str, int]:
    wall, out, rss = run_child(["sha256sum", str(path)])
    return wall, out.split()[0], rss


def time_openssl(path: Path) -> tuple[float, str, int]:
    wall, out, rss = run_child(["openssl", "dgst", "-sha256", "-r", str(path)])
    return wall, out.split()[0], rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small-mib", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the images (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="otactl-hash-bench-", dir=args.dir) as tmp:
        big, small = Path(tmp) / "big.img", Path(tmp) / "small.img"
        print(f"writing {args.size_mib} MiB and {args.small_mib} MiB images in {tmp}", file=sys.stderr)
        make_image(big, args.size_mib)
        make_image(small, args.small_mib)
        time_sha256sum(big)  # warm the page cache: both contenders read from memory
        contenders = [("hash_file", time_hash_file), ("sha256sum", time_sha256sum)]
        if shutil.which("openssl"):
            contenders.append(("openssl", time_openssl))
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for rep in range(args.reps):
            order = contenders if rep % 2 == 0 else contenders[::-1]
            digests = set()
            for name, fn in order:
                seconds, sha, _ = fn(big)
                times[name].append(seconds)
                digests.add(sha)
            assert len(digests) == 1, f"digests differ: {digests}"
            print(f"rep {rep + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
        medians = {name: statistics.median(t) for name, t in times.items()}

        memory = {}
        for label, path, mib in (("small", small, args.small_mib), ("big", big, args.size_mib)):
            _, _, rss_ours = time_hash_file(path)
            _, _, rss_naive = run_child([sys.executable, "-c", NAIVE_CHILD, str(path)])
            _, _, rss_sum = time_sha256sum(path)
            memory[label] = {"mib": mib, "hash_file_kib": rss_ours, "read_bytes_kib": rss_naive,
                             "sha256sum_kib": rss_sum}

    size_bytes = args.size_mib * 1024 * 1024
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "image_mib": args.size_mib,
        "reps": args.reps,
        "seconds": times,
        "median_s": medians,
        "mib_per_s": {name: size_bytes / m / 2**20 for name, m in medians.items()},
        "ratio_vs_sha256sum": medians["sha256sum"] / medians["hash_file"],
        "memory": memory,
    }
    if "openssl" in medians:
        result["ratio_vs_openssl"] = medians["openssl"] / medians["hash_file"]
    print(f"\n| | median of {args.reps} ({args.size_mib} MiB, page cache) | throughput |")
    print("|---|---|---|")
    for name, m in medians.items():
        print(f"| `{name}` | {m:.3f} s | {result['mib_per_s'][name]:.0f} MiB/s |")
    print(f"\nratio sha256sum time / hash_file time: {result['ratio_vs_sha256sum']:.2f}  (goal >= 0.8)")
    if "openssl" in medians:
        print(f"ratio openssl time / hash_file time: {result['ratio_vs_openssl']:.2f}")
    print("\n| peak RSS of the child | " + " | ".join(f"{m['mib']} MiB image" for m in memory.values()) + " |")
    print("|---|---|---|")
    for key, label in (("hash_file_kib", "`hash_file` (python + otactl)"),
                       ("read_bytes_kib", "`sha256(path.read_bytes())` (python)"),
                       ("sha256sum_kib", "`sha256sum`")):
        print(f"| {label} | " + " | ".join(f"{m[key] / 1024:.1f} MiB" for m in memory.values()) + " |")
    print(f"\nload average during the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
