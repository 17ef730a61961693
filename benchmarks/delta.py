"""Delta engines for signed delta updates (decision 1201): bytes, build time, apply time, apply memory.

Images are realistic, never random bytes:
- ``ext4-<N>M``: an ext4 filesystem image (``mke2fs -d``) of real files copied from this machine
  (the Python standard library and ELF binaries from /usr/bin), and the next release's image: the same
  tree with a rebuilt C program, five edited Python files, one new and one removed file (a typical
  minor release). Both are built with a fixed UUID, hash seed and time, as a reproducible build does.
- ``elf``: two builds (gcc -O2) of a generated C program of 3000 functions that differ by a few lines.

Engines: the full image (what a device downloads without deltas), ``zstd -19`` of the image alone
(no source: a compressed full image), zstd patch-from with the whole source as a raw-content
dictionary (python ``zstandard``, level 12 with long-distance matching), otactl's chunked patch-from
(``otactl.release.delta``: 4 MiB chunks, each against a 12 MiB window of the source, level 12),
``bsdiff4`` and HDiffPatch (the ``hdiffpatch`` binding, zstd-compressed).

Memory is the peak resident set of a child process that builds or applies one delta, above the same
child's resident set after its imports (the kernel's peak mark is reset there with
``/proc/self/clear_refs``; then ``VmHWM`` minus ``VmRSS``): what applying costs on top of the agent.
Times are the child's wall time for the call alone. A build that runs longer than ``--timeout``
seconds is stopped and reported as such.

Run: python benchmarks/delta.py [--sizes 32 128] [--no-slow-above 64] [--timeout 240] [--work DIR] [--json OUT]
(bsdiff4 and HDiffPatch build in memory at ~10-20x the image: they are skipped above --no-slow-above MiB.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAKE_TIME = "1767225600"  # 2026-01-01, fixed, as a reproducible build does
UUID = "5e1f2a3b-0000-4000-8000-0123456789ab"

C_HEADER = "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"


def c_program(n: int, changed: bool) -> str:
    """A generated program: n small functions doing arithmetic and string work, and a main."""
    out = [C_HEADER]
    for i in range(n):
        k = i * 7 + 3
        body = f"  long acc = {k};\n  for (int j = 0; j < n; j++) acc = acc * {k % 13 + 3} + (s[j % 16] ^ {i % 251});\n"
        if changed and i in (1200, 2400):  # the release's fix: a bound check and a new constant
            body += f"  if (acc < 0) {{ fprintf(stderr, \"overflow in f{i}\\n\"); acc = -acc; }}\n"
            body += f"  acc ^= 0x{i:04x}5a5aL;\n"
        body += f"  snprintf(buf, 64, \"f{i}:%ld\", acc);\n  return (long)strlen(buf) + acc % 97;\n"
        out.append(f"static long f{i}(const char *s, int n, char *buf) {{\n{body}}}\n")
    out.append("int main(int argc, char **argv) {\n  char buf[64]; long t = 0; const char *s = argc > 1 ? "
               "argv[1] : \"otactl-delta-benchmark\";\n")
    out += [f"  t += f{i}(s, argc + {i % 5}, buf);\n" for i in range(n)]
    out.append("  printf(\"%ld\\n\", t);\n  return 0;\n}\n")
    return "".join(out)


def build_elf(work: Path, changed: bool) -> Path:
    src = work / f"app-{int(changed)}.c"
    exe = work / f"app-{int(changed)}.elf"
    if not exe.exists():
        src.write_text(c_program(3000, changed))
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def _copy_tree(dest: Path, budget: int) -> None:
    """Real files up to ``budget`` bytes: the standard library, then ELF binaries."""
    roots = [Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}",
             Path("/usr/bin"), Path("/usr/lib/x86_64-linux-gnu")]
    used = 0
    for root in roots:
        for path in sorted(root.rglob("*")):
            if used >= budget:
                return
            skip = {"__pycache__", "test", "tests", "site-packages"}
            if path.is_symlink() or not path.is_file() or skip & set(path.parts):
                continue
            size = -(-path.stat().st_size // 4096) * 4096 + 4096  # blocks and an inode's share
            if size > 8 * 1024 * 1024 or used + size > budget:
                continue
            target = dest / root.name / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, target)
            except OSError:
                continue
            os.utime(target, (1735689600, 1735689600))
            used += size


def _release_change(tree: Path, work: Path) -> None:
    """A minor release: a rebuilt program, five edited Python files, one file added and one removed."""
    shutil.copyfile(build_elf(work, True), tree / "bin" / "app")
    edited = sorted(p for p in tree.rglob("*.py") if p.stat().st_size > 4000)[10:60:10]
    for path in edited:
        text = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
        text.insert(len(text) // 2, "# release 2.1.0: fix a bound check\nif False:\n    pass\n")
        path.write_text("".join(text), encoding="utf-8", errors="surrogateescape")
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc" / "release-notes.txt").write_text("2.1.0\n" + "injection timing fix\n" * 5000)
    removable = sorted(p for p in tree.rglob("*.py"))[-1]
    removable.unlink()
    for path in [*edited, tree / "bin" / "app", tree / "etc" / "release-notes.txt"]:
        os.utime(path, (1767225600, 1767225600))


def build_ext4(work: Path, mib: int) -> tuple[Path, Path]:
    old_img, new_img = work / f"ext4-{mib}M-old.img", work / f"ext4-{mib}M-new.img"
    if old_img.exists() and new_img.exists():
        return old_img, new_img
    tree = work / f"tree-{mib}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    _copy_tree(tree, int(mib * 1024 * 1024 * 0.7))
    (tree / "bin").mkdir(exist_ok=True)
    shutil.copyfile(build_elf(work, False), tree / "bin" / "app")
    os.utime(tree / "bin" / "app", (1735689600, 1735689600))
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME}
    mkfs = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-U", UUID, "-E", f"hash_seed={UUID},root_owner=0:0"]
    subprocess.run([*mkfs, "-d", str(tree), str(old_img), f"{mib}M"], check=True, env=env)
    _release_change(tree, work)
    subprocess.run([*mkfs, "-d", str(tree), str(new_img), f"{mib}M"], check=True, env=env)
    shutil.rmtree(tree)
    return old_img, new_img


# ----------------------------------------------------------------------------- engines (build side)
def _zstd_patch_from(src: bytes, tgt: bytes) -> bytes:
    import math

    import zstandard

    d = zstandard.ZstdCompressionDict(src, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    wlog = min(31, max(10, math.ceil(math.log2(len(src) + len(tgt)))))
    params = zstandard.ZstdCompressionParameters.from_level(12, window_log=wlog, enable_ldm=True)
    return zstandard.ZstdCompressor(dict_data=d, compression_params=params).compress(tgt)


def build_engine(engine: str, old: Path, new: Path, out: Path) -> None:
    if engine == "otactl-chunked":
        from otactl.release.delta import build_delta

        build_delta(old, new, out)
        return
    src, tgt = old.read_bytes(), new.read_bytes()
    if engine == "zstd-19-full-image":
        import zstandard

        out.write_bytes(zstandard.ZstdCompressor(level=19).compress(tgt))
    elif engine == "zstd-patch-from":
        out.write_bytes(_zstd_patch_from(src, tgt))
    elif engine == "bsdiff4":
        import bsdiff4

        out.write_bytes(bsdiff4.diff(src, tgt))
    elif engine == "hdiffpatch":
        import hdiffpatch

        out.write_bytes(hdiffpatch.diff(src, tgt, hdiffpatch.COMPRESSION_ZSTD, validate=False))
    else:
        raise ValueError(engine)


# ----------------------------------------------------------------------------- apply (in a child)
APPLY_CHILD = r"""
import sys, time
from pathlib import Path
engine, old, delta, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
import zstandard, bsdiff4, hdiffpatch
from otactl.release import delta as otadelta
sys.path.insert(0, sys.argv[5])
from delta import rss_kib, reset_peak
base = reset_peak()
t = time.perf_counter()
if engine == "otactl-chunked":
    with open(out, "wb") as fh:
        otadelta.apply_delta(delta, old, fh)
elif engine == "zstd-19-full-image":
    with open(delta, "rb") as src, open(out, "wb") as fh:
        zstandard.ZstdDecompressor().copy_stream(src, fh)
elif engine == "zstd-patch-from":
    d = zstandard.ZstdCompressionDict(old.read_bytes(), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    with open(delta, "rb") as src, open(out, "wb") as fh:
        zstandard.ZstdDecompressor(dict_data=d, max_window_size=1 << 31).copy_stream(src, fh)
elif engine == "bsdiff4":
    out.write_bytes(bsdiff4.patch(old.read_bytes(), delta.read_bytes()))
elif engine == "hdiffpatch":
    out.write_bytes(hdiffpatch.apply(old.read_bytes(), delta.read_bytes()))
elapsed = time.perf_counter() - t
print(elapsed, rss_kib("VmHWM") - base)
"""

ENGINES = ("zstd-19-full-image", "zstd-patch-from", "otactl-chunked", "bsdiff4", "hdiffpatch")
SLOW = {"bsdiff4", "hdiffpatch"}


def rss_kib(field: str = "VmRSS") -> int:
    """The process's resident set (``VmRSS``) or its peak since the last reset (``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5); the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_kib()


def build_child(engine: str, old: Path, new: Path, out: Path) -> None:
    """In a child: build one delta; print wall seconds and peak RSS above the idle child (KiB)."""
    import bsdiff4  # noqa: F401 - imported before the baseline, like the other engines
    import hdiffpatch  # noqa: F401
    import zstandard  # noqa: F401

    import otactl.release.delta  # noqa: F401

    base = reset_peak()
    t = time.perf_counter()
    build_engine(engine, old, new, out)
    print(time.perf_counter() - t, rss_kib("VmHWM") - base)


def measure(name: str, old: Path, new: Path, work: Path, slow_ok: bool, timeout: int) -> list[dict[str, object]]:
    size = new.stat().st_size
    rows: list[dict[str, object]] = [{"image": name, "engine": "full image (no delta)", "bytes": size,
                                      "image_bytes": size}]
    for engine in ENGINES:
        row: dict[str, object] = {"image": name, "engine": engine, "image_bytes": size}
        rows.append(row)
        if engine in SLOW and not slow_ok:
            row.update(bytes=None, note="skipped (builds in memory at 10-20x the image)")
            continue
        out = work / f"{name.split()[0]}.{engine}.delta"
        try:
            built = subprocess.run([sys.executable, __file__, "--build-child", engine, str(old), str(new), str(out)],
                                   check=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            row.update(bytes=None, build_s=f"> {timeout}", note=f"build stopped after {timeout} s")
            out.unlink(missing_ok=True)
            print(json.dumps(row), file=sys.stderr, flush=True)
            continue
        build_s, build_kib = built.stdout.split()
        result = work / f"{name.split()[0]}.{engine}.out"
        child = subprocess.run([sys.executable, "-c", APPLY_CHILD, engine, str(old), str(out), str(result),
                                str(Path(__file__).parent)],
                               check=True, capture_output=True, text=True)
        apply_s, rss_kib = child.stdout.split()
        row.update(bytes=out.stat().st_size, build_s=round(float(build_s), 2),
                   build_rss_mib=round(int(build_kib) / 1024, 1), apply_s=round(float(apply_s), 2),
                   apply_rss_mib=round(int(rss_kib) / 1024, 1), correct=result.read_bytes() == new.read_bytes())
        result.unlink()
        out.unlink()
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict[str, object]], argv: list[str]) -> str:
    lines = [f"Command: `python benchmarks/delta.py {' '.join(argv)}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.", "",
             "| image | engine | bytes | image / bytes | build s | build peak RSS MiB | apply s | "
             "apply peak RSS MiB | correct |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["bytes"] is None:
            lines.append(f"| {r['image']} | {r['engine']} | - | - | {r.get('build_s', '-')} | - | - | - | "
                         f"{r['note']} |")
            continue
        ratio = int(r["image_bytes"]) / max(int(r["bytes"]), 1)  # type: ignore[call-overload]
        lines.append(f"| {r['image']} | {r['engine']} | {r['bytes']:,} | {ratio:.1f}x | {r.get('build_s', '-')} | "
                     f"{r.get('build_rss_mib', '-')} | {r.get('apply_s', '-')} | {r.get('apply_rss_mib', '-')} | "
                     f"{r.get('correct', '-')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--build-child"]:
        build_child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128], help="ext4 image sizes in MiB")
    parser.add_argument("--no-slow-above", type=int, default=64, help="skip bsdiff4/HDiffPatch above this MiB")
    parser.add_argument("--timeout", type=int, default=240, help="stop a delta build after this many seconds")
    parser.add_argument("--work", type=Path, help="keep images here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="otactl-delta-"))
    work.mkdir(parents=True, exist_ok=True)
    old_elf, new_elf = build_elf(work, False), build_elf(work, True)
    rows = measure("elf (gcc -O2, 3000 functions)", old_elf, new_elf, work, True, args.timeout)
    for mib in args.sizes:
        old, new = build_ext4(work, mib)
        rows += measure(f"ext4 {mib} MiB", old, new, work, mib <= args.no_slow_above, args.timeout)
    print(markdown(rows, sys.argv[1:]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
