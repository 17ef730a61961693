"""`otactl repo prune`: remove old metadata versions and unreachable targets, every root kept
(decision 1204).

What is kept (everything else under ``metadata/`` and ``targets/`` goes):

- every ``N.root.json``, ``root.json`` and ``timestamp.json``;
- the *kept generations*: the current snapshot, the ``keep_versions`` snapshots before it, and
  every older snapshot signed within ``grace`` of now (its ``expires`` less the snapshot lifetime).
  A device that began an update on one of them still finds every file it names: each role version
  the snapshot lists, and each target those role versions list;
- every target a staged proposal (``staging/**.metadata.json``) lists: built, not yet published;
- every target of unknown age or written within ``grace`` (an upload whose metadata is not yet
  written); a metadata version newer than the current one (never: that is a publication's);
- in the director layout (decision 0407), every device record: the devices' own chains name them, and
  old chain versions under ``director/`` are not pruned yet either.

Published releases never leave the ``releases`` metadata (a withdrawal is its own signed role), so
every release a policy, a pin or a stepping stone can reach is in the current generation and kept;
``prune`` checks it for the policies and their stepping stones, and stops on any problem, one line
each, deleting nothing. It refuses while a publication is pending and, just before deleting, checks
that ``timestamp.json`` did not move since it was read. Any subset of the deletions is safe, so a
crash is completed by running it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tuf.api.metadata import Metadata, Snapshot, Targets
from tuf.api.serialization import DeserializationError

from otactl.agent.model import ReleaseDescriptor
from otactl.app.context import Context
from otactl.app.policy import current_policy
from otactl.errors import ConflictError, NotFoundError, OtactlError, UsageError
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY, Repository

DEFAULT_KEEP_VERSIONS = 3
DEFAULT_GRACE_DAYS = 7
_VERSIONED = re.compile(r"^metadata/([0-9]+)\.(.+)\.json\Z")
_TARGET = re.compile(r"^targets/(?:(.*)/)?([0-9a-f]{64})\.([^/]+)\Z")


@dataclass(frozen=True)
class Removal:
    key: str
    kind: str  # metadata | target
    why: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "kind": self.kind, "why": self.why}


@dataclass(frozen=True)
class PruneResult:
    store: str
    dry_run: bool
    removals: tuple[Removal, ...]
    generations: tuple[int, ...]  # snapshot versions kept whole
    kept_metadata: int
    kept_targets: int
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "dry_run": self.dry_run, "deleted": [] if self.dry_run else
                [r.to_json() for r in self.removals], "would_delete": [r.to_json() for r in self.removals]
                if self.dry_run else [], "kept_generations": list(self.generations),
                "kept_metadata": self.kept_metadata, "kept_targets": self.kept_targets,
                "problems": list(self.problems)}


@dataclass
class _Plan:
    problems: list[str] = field(default_factory=list)
    metadata: set[str] = field(default_factory=set)  # metadata keys to keep
    targets: set[str] = field(default_factory=set)  # target keys to keep
    parsed: dict[str, Metadata[Any]] = field(default_factory=dict)

    def load(self, ctx: Context, key: str, *, required: bool) -> Metadata[Any] | None:
        if key in self.parsed:
            return self.parsed[key]
        try:
            md: Metadata[Any] = Metadata.from_bytes(ctx.store.get(key))
        except NotFoundError:
            if required:
                self.problems.append(f"{ctx.store.url}{key}: missing, but the current snapshot names it")
            return None
        except DeserializationError as exc:
            self.problems.append(f"{ctx.store.url}{key}: not valid TUF metadata ({exc})")
            return None
        self.parsed[key] = md
        return md

    def keep_targets_of(self, md: Metadata[Any]) -> None:
        if isinstance(md.signed, Targets):
            for path, tf in md.signed.targets.items():
                sha = tf.hashes.get("sha256")
                if sha is not None:
                    self.targets.add(layout.target_key(path, sha))


def prune(ctx: Context, *, dry_run: bool, keep_versions: int = DEFAULT_KEEP_VERSIONS,
          grace_days: float = DEFAULT_GRACE_DAYS) -> PruneResult:
    if keep_versions < 0:
        raise UsageError(f"--keep-versions must be 0 or more, not {keep_versions}")
    if grace_days < 0:
        raise UsageError(f"--grace-days must be 0 or more, not {grace_days}")
    repo = ctx.repository()  # refuses while a publication is pending (the journal)
    etag = ctx.store.get_versioned(layout.metadata_key("timestamp", None)).etag
    grace = timedelta(days=grace_days)
    plan = _Plan()
    listed = list(ctx.store.list("metadata/"))
    generations = _generations(ctx, repo, listed, plan, keep_versions, grace)
    for version in generations:
        key = layout.metadata_key("snapshot", version)
        snapshot = repo.snapshot if version == repo.snapshot.signed.version else plan.load(ctx, key, required=False)
        if snapshot is None:
            continue
        plan.metadata.add(key)
        current = version == repo.snapshot.signed.version
        for entry, meta in snapshot.signed.meta.items():
            role_key = layout.metadata_key(entry.removesuffix(".json"), meta.version)
            plan.metadata.add(role_key)
            md = plan.load(ctx, role_key, required=current)
            if md is not None:
                plan.keep_targets_of(md)
    for key in ctx.store.list("staging/"):
        if key.endswith(".metadata.json") and key != JOURNAL_KEY:
            staged = plan.load(ctx, key, required=False)
            if staged is not None:
                plan.keep_targets_of(staged)
    _check_reachable(ctx, repo, plan)

    removals = _metadata_removals(repo, listed, plan)
    kept_targets = 0
    from otactl.app import director

    records_elsewhere = director.enabled(repo)  # device chains name the records, not the image repository
    for key in ctx.store.list("targets/"):
        if key in plan.targets or not _TARGET.match(key) or (records_elsewhere and key.startswith("targets/devices/")):
            kept_targets += 1
            continue
        written = ctx.store.modified(key)
        # ctx.now is whole seconds (metadata times are); an mtime later in the same second is not "new"
        if written is None or ctx.now - written.replace(microsecond=0) < grace:
            kept_targets += 1
            continue
        removals.append(Removal(key, "target", "listed by no kept generation nor staged release"))
    kept_metadata = len(listed) - sum(r.kind == "metadata" for r in removals)
    result = PruneResult(ctx.store.url, dry_run, tuple(removals), tuple(sorted(generations)), kept_metadata,
                         kept_targets, tuple(plan.problems))
    if plan.problems or dry_run:
        return result
    if ctx.store.exists(JOURNAL_KEY) or \
            ctx.store.get_versioned(layout.metadata_key("timestamp", None)).etag != etag:
        raise ConflictError(f"{ctx.store.url}: the repository changed while pruning; nothing deleted",
                            hint="run `otactl repo prune` again")
    _delete(ctx, (r.key for r in removals))
    return result


def _generations(ctx: Context, repo: Repository, listed: list[str], plan: _Plan, keep_versions: int,
                 grace: timedelta) -> set[int]:
    current = repo.snapshot.signed.version
    kept = {v for v in range(current - keep_versions, current + 1) if v >= 1}
    lifetime = timedelta(days=ctx.trust.role("snapshot").expires_days)
    for key in listed:
        match = _VERSIONED.match(key)
        if match is None or match.group(2) != "snapshot":
            continue
        version = int(match.group(1))
        if version in kept:
            continue
        if version > current:
            kept.add(version)  # not ours to judge
            continue
        md = plan.load(ctx, key, required=False)
        if md is not None and not isinstance(md.signed, Snapshot):
            plan.problems.append(f"{ctx.store.url}{key}: holds {md.signed.type} metadata, not a snapshot")
        elif md is not None and ctx.now - (md.signed.expires - lifetime) < grace:
            kept.add(version)  # signed within the grace period
    return kept


def _metadata_removals(repo: Repository, listed: Iterable[str], plan: _Plan) -> list[Removal]:
    current = {entry.removesuffix(".json"): meta.version for entry, meta in repo.snapshot.signed.meta.items()}
    current["snapshot"] = repo.snapshot.signed.version
    removals = []
    for key in listed:
        match = _VERSIONED.match(key)
        if match is None or key in plan.metadata:
            continue
        version, role = int(match.group(1)), match.group(2)
        if role == "root":
            continue  # every root is kept: a device back after years walks them all
        if role in current and version >= current[role]:
            continue
        removals.append(Removal(key, "metadata", f"{role} v{version}: in no kept generation"))
    return removals


def _check_reachable(ctx: Context, repo: Repository, plan: _Plan) -> None:
    """Every release a current policy names, and its stepping stones, is listed and its files kept."""
    models = sorted({path.split("/")[1].removesuffix(".json") for path in repo.role("rollouts").signed.targets})
    for model in models:
        try:
            policy = current_policy(ctx, repo, model)
        except (OtactlError, ValueError) as exc:
            plan.problems.append(f"{layout.rollout_path(model)}: cannot read the current policy ({exc})")
            continue
        if policy is None:
            continue
        wanted = [str(policy.get("baseline"))] + [str(r.get("release")) for r in policy.get("rings", [])]
        seen: set[str] = set()
        while wanted:
            version = wanted.pop()
            if version in seen or version == "None":
                continue
            seen.add(version)
            path = layout.release_path(model, version)
            found = repo.find_target(path)
            if found is None:
                plan.problems.append(f"{path}: named by the current {model} policy (or a stepping stone) "
                                     "but not published")
                continue
            key = layout.target_key(path, found[1].hashes["sha256"])
            try:
                desc = ReleaseDescriptor.from_bytes(ctx.store.get(key), f"{ctx.store.url}{key}")
            except OtactlError as exc:
                plan.problems.append(f"{ctx.store.url}{key}: {exc}")
                continue
            refs = [*desc.firmware.values(), *desc.configs.values()]
            for ref in refs:
                ref_key = layout.target_key(ref.target, ref.sha256)
                if ref_key not in plan.targets or not ctx.store.exists(ref_key):
                    plan.problems.append(f"{ref.target}: needed by {model}/{version} but missing from the store "
                                         "or from the current metadata")
            if desc.stepping_stone is not None:
                wanted.append(desc.stepping_stone)


def _delete(ctx: Context, keys: Iterable[str]) -> None:
    for key in keys:
        ctx.store.delete(key)
