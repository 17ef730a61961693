"""Release services: build (CI), review, approve (release managers), publish, list.

Withdrawal, a signed statement of the release managers, is in ``otactl.app.withdraw``.

Store layout beside the published repository:

    staging/releases/<model>/<version>.metadata.json   the proposed metadata of the release (signed)
    releases-state/<model>/<version>.json              status: staged, published or withdrawn

A build stages the release's own role, ``release-<model>-<version>`` version 1 with only this
release's targets, signed by the CI key (decision 1203); release managers add signatures to exactly
those bytes; publish installs it only when the approval rule's threshold is met, and delegates it from
the ``release-index``. No staged release depends on another, so several are built, approved and
published in any order. A repository made before decision 1203 (no index) still stages the next version
of its single ``releases`` role (decision 0010) until ``otactl repo migrate-releases``. Approve and
publish re-check the staged metadata against what is published and re-hash every file it adds, and
review shows what the signed documents say (not the unsigned state file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization import DeserializationError

import otactl.keys.keyfile as keyfile
from otactl import progress
from otactl.app import bootstrap, release_delta, stored
from otactl.app.context import Context
from otactl.errors import ConflictError, NotFoundError, StoreError, UsageError, VerificationError
from otactl.release import bundle
from otactl.release.hashing import hash_file
from otactl.release.manifest import VERSION_RE, Manifest
from otactl.repo import layout, release_roles
from otactl.repo.repository import Repository, to_bytes


def staged_key(model: str, version: str) -> str:
    return f"staging/releases/{model}/{version}.metadata.json"


def state_key(model: str, version: str) -> str:
    return f"releases-state/{model}/{version}.json"


@dataclass(frozen=True)
class ReleaseRef:
    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}/{self.version}"


@dataclass
class ReleaseInfo:
    model: str
    version: str
    status: str  # staged | approved | published | withdrawn
    security_version: int
    signed_by: list[str]
    missing: list[str]
    threshold: int
    created: str
    targets: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, Any] = field(default_factory=dict)
    variant_changes: dict[str, Any] = field(default_factory=dict)
    previous: str | None = None
    firmware: dict[str, str] = field(default_factory=dict)  # hardware revision -> image target
    needed: int = 0  # signatures still needed before it can publish (staged only)


def version_key(version: str) -> tuple[Any, ...]:
    core, _, pre = version.replace("+", "-").partition("-")
    return (*(int(p) for p in core.split(".")), pre == "", pre)


STATE_SCHEMA = "otactl/release-state/1"
STATE_KIND = "release state"
STORED_STATUSES = ("staged", "published", "withdrawn")  # "approved" is worked out from the signatures


def parse_state(data: bytes, where: str, model: str, version: str) -> dict[str, Any]:
    """A release's state document, checked field by field (one StoreError naming ``where`` and the field)."""
    f = stored.decode(data, where, STATE_KIND)
    if f.doc.get("schema") != STATE_SCHEMA:
        raise f.error("schema", f"must be {STATE_SCHEMA!r}, got {f.doc.get('schema')!r:.60}")
    for key, expected in (("model", model), ("version", version)):
        if f.text(key) != expected:
            raise f.error(key, f"{f.doc[key]!r:.60} does not match the object's name ({expected!r})")
    f.choice("status", STORED_STATUSES)
    f.time("created")
    f.integer("security_version")
    f.optional_text("built_by")
    f.optional_text("role")
    f.texts("new_targets", optional=True)
    variants = f.optional_obj("variants")
    if variants is not None:
        for name, params in variants.doc.items():
            variants.obj_of(name, params)
    if f.doc.get("status") == "withdrawn":
        f.obj("withdrawn").text("reason")
    return f.doc


def _state_where(ctx: Context, model: str, version: str) -> str:
    return f"{ctx.store.url}{state_key(model, version)}"


def _load_state(ctx: Context, model: str, version: str) -> dict[str, Any] | None:
    raw = ctx.store.get_optional(state_key(model, version))
    return None if raw is None else parse_state(raw, _state_where(ctx, model, version), model, version)


def _versioned_state(ctx: Context, ref: ReleaseRef) -> tuple[dict[str, Any], str]:
    """The state document to update and the etag to update it against."""
    versioned = ctx.store.get_versioned(state_key(ref.model, ref.version))
    where = _state_where(ctx, ref.model, ref.version)
    return parse_state(versioned.data, where, ref.model, ref.version), versioned.etag


def resolve(ctx: Context, spec: str) -> ReleaseRef:
    """``MODEL/VERSION``, or ``VERSION`` when exactly one model has it."""
    if "/" in spec:
        model, _, version = spec.partition("/")
        return ReleaseRef(model, version)
    models = sorted({k.split("/")[1] for k in ctx.store.list("releases-state/") if k.endswith(f"/{spec}.json")})
    if not models:
        raise NotFoundError(f"release {spec!r}: no such release (see `otactl release list`)")
    if len(models) > 1:
        raise UsageError(f"release {spec!r} exists for several models ({', '.join(models)}); "
                         f"say MODEL/{spec}")
    return ReleaseRef(models[0], spec)


def _published_descriptors(repo: Repository, model: str) -> dict[str, TargetFile]:
    """Version -> the signed entry of the release's descriptor, for every published release of ``model``."""
    out = {}
    for version, role in repo.published_releases(model).items():
        tf = repo.role(role).signed.targets.get(layout.release_path(model, version))
        if tf is not None:
            out[version] = tf
    return out


LEGACY_ROLE = release_roles.ANCHOR  # a repository made before decision 1203 stages the next ``releases``


def _role_name(repo: Repository, model: str, version: str) -> str:
    """Which role a new build of ``model``/``version`` stages."""
    return release_roles.ReleaseRole(model, version).name if repo.has_index() else LEGACY_ROLE


def _base(repo: Repository, role: str) -> tuple[int, dict[str, TargetFile]]:
    """What a staged role must be the next version of: the published ``releases`` (decision 0010), or
    nothing (a release's own role is version 1); its version and targets."""
    if role == LEGACY_ROLE:
        published = repo.role(LEGACY_ROLE).signed
        return published.version, dict(published.targets)
    return 0, {}


def _staged_role(state: dict[str, Any]) -> str:
    role = state.get("role", LEGACY_ROLE)  # state written before decision 1203: the single role
    return role if isinstance(role, str) else LEGACY_ROLE


def _sign_with(md: Metadata[Targets], ctx: Context, key_name: str) -> None:
    signer = ctx.signers.get(key_name)
    md.sign(signer, append=True)


# ------------------------------------------------------------------------ build
def build(ctx: Context, manifest: Manifest, *, ci_key: str | None = None,
          delta_from: tuple[str, ...] = ()) -> ReleaseInfo:
    if bootstrap.pending(ctx.store):  # release managers with their own keys signed the first versions
        bootstrap.publish_if_signed(ctx)
    repo = ctx.repository()
    model, version = manifest.model, manifest.version
    published = _published_descriptors(repo, model)
    if version in published or ctx.store.exists(state_key(model, version)):
        raise manifest.error("version", f"release {model}/{version} already exists")
    floor = max((layout.get_custom(tf).get("security_version", 0) for tf in published.values()), default=0)
    if manifest.security_version < floor:
        raise manifest.error("security_version", f"{manifest.security_version} is below {floor}, the highest "
                                                 f"published for {model} (anti-rollback floor)")
    if manifest.stepping_stone and manifest.stepping_stone not in published:
        raise manifest.error("stepping_stone", f"{model}/{manifest.stepping_stone} is not published")
    ci_names = [ci_key] if ci_key else [k for k in ctx.trust.ci_keys if ctx.signers.has_private(k)]
    if not ci_names:
        raise UsageError("no CI key here to sign the build (trust config ci_keys)",
                         hint="run the build where the CI key or its KMS URI is available")
    if ci_names[0] not in ctx.trust.ci_keys:
        raise UsageError(f"key {ci_names[0]!r} is not a CI key")
    signer_name = ci_names[0]
    ctx.signers.get(signer_name)  # unlock before the long hashing step

    firmware: dict[str, bundle.TargetBlob] = {}
    uploads: list[tuple[bundle.TargetBlob, Path]] = []
    for fw in manifest.firmware:
        rev = fw.hardware_revision
        if fw.file is not None:
            total = fw.file.stat().st_size if fw.file.is_file() else 0
            try:
                with progress.task(f"hashing {fw.file.name}", total, "bytes") as hashing:
                    length, sha = hash_file(fw.file, hashing.advance)
            except UsageError as exc:
                raise manifest.error(f"firmware.{rev}.file", exc.message) from None
            path = layout.firmware_path(model, version, fw.file.name)
            b = bundle.TargetBlob(path, length, sha, {
                "model": model, "version": version, "security_version": manifest.security_version,
                "hardware_revisions": [rev]})
            uploads.append((b, fw.file))
        else:
            where = f"firmware.{rev}.from_release"
            if (fw.from_release or "") not in published:
                raise manifest.error(where, f"{model}/{fw.from_release} is not published")
            src_doc = json.loads(_download(ctx, repo, layout.release_path(model, fw.from_release or "")))
            ref = src_doc["firmware"].get(rev)
            if ref is None:
                raise manifest.error(where, f"{model}/{fw.from_release} has no image for hardware revision {rev}")
            b = bundle.TargetBlob(ref["target"], ref["length"], ref["sha256"], {})
        firmware[rev] = b
    deltas = release_delta.build_deltas(ctx, repo, manifest, uploads, delta_from)  # uploaded; decision 1201
    configs = bundle.config_blobs(manifest)
    descriptor = bundle.descriptor_blob(manifest, firmware, configs, deltas)

    # upload content-addressed target files first: invisible to clients until metadata names them
    with progress.task("copying images to the store", sum(b.length for b, _ in uploads), "bytes") as copying:
        for b, src_path in uploads:
            ctx.store.put_file(layout.target_key(b.path, b.sha256), src_path)
            copying.advance(b.length)
    for b in [*configs, descriptor]:
        assert b.data is not None
        ctx.store.put(layout.target_key(b.path, b.sha256), b.data)

    role = _role_name(repo, model, version)
    base_version, base_targets = _base(repo, role)
    md: Metadata[Targets] = Metadata(Targets(targets=base_targets))
    for b in [*(b for b, _ in uploads), *deltas, *configs, descriptor]:
        tf = TargetFile(b.length, {"sha256": b.sha256}, b.path)
        layout.set_custom(tf, b.custom)
        md.signed.targets[b.path] = tf
    md.signed.version = base_version + 1
    md.signed.expires = repo._expiry(LEGACY_ROLE) if role == LEGACY_ROLE else \
        (ctx.now + timedelta(days=release_roles.EXPIRY_DAYS)).replace(microsecond=0)
    _sign_with(md, ctx, signer_name)
    state = {"schema": STATE_SCHEMA, "model": model, "version": version, "status": "staged",
             "created": ctx.now.isoformat(), "built_by": signer_name, "role": role,
             "base_releases_version": base_version,
             "security_version": manifest.security_version, "variants": manifest.variants,
             "new_targets": sorted(b.path for b in [*(b for b, _ in uploads), *deltas, *configs, descriptor])}
    ctx.store.put(staged_key(model, version), to_bytes(md))
    try:
        ctx.store.put_if(state_key(model, version), json.dumps(state, indent=1).encode(), None)
    except ConflictError:
        raise UsageError(f"release {model}/{version} already exists (built concurrently)") from None
    return info(ctx, ReleaseRef(model, version))


def _download(ctx: Context, repo: Repository, path: str) -> bytes:
    found = repo.find_target(path)
    if found is None:
        raise NotFoundError(f"target {path!r} is not published")
    _, tf = found
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    tf.verify_length_and_hashes(data)
    return data


# ------------------------------------------------------------------------ inspect
def _staged(ctx: Context, ref: ReleaseRef) -> Metadata[Targets]:
    try:
        return Metadata.from_bytes(ctx.store.get(staged_key(ref.model, ref.version)))
    except DeserializationError as exc:
        raise VerificationError(f"{ctx.store.url}{staged_key(ref.model, ref.version)}: corrupt ({exc})") from exc


def _valid_signers(ctx: Context, md: Metadata[Targets]) -> list[str]:
    names = []
    for keyid, sig in md.signatures.items():
        entry = ctx.trust.key_by_id(keyid)
        if entry is None or entry.name not in ctx.trust.role("releases").keys:
            continue
        try:
            keyfile.public_key(entry.public).verify_signature(sig, md.signed_bytes)
        except Exception:  # noqa: BLE001, S112 - any verification failure means "not signed"
            continue
        names.append(entry.name)
    return sorted(names)


def info(ctx: Context, ref: ReleaseRef) -> ReleaseInfo:
    state = _load_state(ctx, ref.model, ref.version)
    if state is None:
        raise NotFoundError(f"release {ref}: no such release (see `otactl release list`)")
    role = ctx.trust.role("releases")
    signed_by: list[str] = []
    md = None
    if ctx.store.exists(staged_key(ref.model, ref.version)):
        md = _staged(ctx, ref)
        signed_by = _valid_signers(ctx, md)
    status = state["status"]
    if status == "staged" and len(signed_by) >= role.threshold:
        status = "approved"
    missing = [k for k in role.keys if k not in signed_by] if status in ("staged", "approved") else []
    result = ReleaseInfo(ref.model, ref.version, status, state["security_version"], signed_by,
                         missing if status == "staged" else [], role.threshold, state["created"],
                         variants=state.get("variants", {}),
                         needed=max(0, role.threshold - len(signed_by)) if status == "staged" else 0)
    if md is not None:
        for path in sorted(p for p in md.signed.targets if belongs(p, ref.model, ref.version)):
            tf = md.signed.targets[path]
            result.targets.append({"path": path, "length": tf.length, "sha256": tf.hashes["sha256"]})
    return result


def belongs(path: str, model: str, version: str) -> bool:
    """Is ``path`` one of the targets a release adds (its images, configs and descriptor)?"""
    return (path.startswith((f"firmware/{model}/{version}/", f"config/{model}/{version}/"))
            or path == layout.release_path(model, version))


def _verified(ctx: Context, ref: ReleaseRef, tf: TargetFile) -> bytes:
    data = ctx.store.get_optional(layout.target_key(tf.path, tf.hashes["sha256"]))
    if data is None:
        raise VerificationError(f"release {ref}: file {tf.path} is missing from the store")
    try:
        tf.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        raise VerificationError(f"release {ref}: file {tf.path} changed since it was signed ({exc})") from None
    return data


def _signed_release(ctx: Context, ref: ReleaseRef, targets: Targets) -> tuple[dict[str, Any], dict[str, Any]]:
    """(descriptor, variant -> parameters) as the signed documents listed in ``targets`` say."""
    tf = targets.targets.get(layout.release_path(ref.model, ref.version))
    if tf is None:
        raise VerificationError(f"release {ref}: no descriptor in its metadata")
    descriptor: dict[str, Any] = json.loads(_verified(ctx, ref, tf))
    variants = {}
    for variant, entry in sorted(descriptor.get("configs", {}).items()):
        cfg = targets.targets.get(entry["target"])
        if cfg is None:
            raise VerificationError(f"release {ref}: config {entry['target']} is not in its metadata")
        variants[variant] = json.loads(_verified(ctx, ref, cfg))["parameters"]
    return descriptor, variants


def review(ctx: Context, spec: str) -> ReleaseInfo:
    """What will ship, read from the signed documents (staged, or published), and what changes."""
    ref = resolve(ctx, spec)
    result = info(ctx, ref)
    repo = ctx.repository()
    published = repo.published_releases(ref.model)
    # a withdrawn release may be either published or not
    source = repo.role(published[ref.version]).signed if ref.version in published else _staged(ctx, ref).signed
    descriptor, result.variants = _signed_release(ctx, ref, source)
    result.security_version = int(descriptor["security_version"])
    result.firmware = {rev: entry["target"] for rev, entry in sorted(descriptor["firmware"].items())}
    older = [v for v in published if version_key(v) < version_key(ref.version)]
    previous: dict[str, Any] = {}
    if older:
        result.previous = max(older, key=version_key)
        _, previous = _signed_release(ctx, ReleaseRef(ref.model, result.previous),
                                      repo.role(published[result.previous]).signed)
    result.variant_changes = diff_variants(previous, result.variants)
    return result


def diff_variants(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes[name] = {"removed": True}
        elif name not in old:
            changes[name] = {"added": new[name]}
        else:
            delta = {k: {"from": old[name].get(k), "to": new[name].get(k)}
                     for k in sorted(set(old[name]) | set(new[name])) if old[name].get(k) != new[name].get(k)}
            if delta:
                changes[name] = {"changed": delta}
    return changes


def list_releases(ctx: Context) -> list[ReleaseInfo]:
    out = []
    for key in ctx.store.list("releases-state/"):
        parts = key.split("/")
        version = parts[-1].removesuffix(".json")
        if len(parts) != 3 or not parts[-1].endswith(".json") or not VERSION_RE.match(version):
            raise StoreError(f"{ctx.store.url}{key}: not a release state object (expected "
                             "releases-state/<model>/<version>.json); move it out of releases-state/")
        out.append(info(ctx, ReleaseRef(parts[1], version)))
    return sorted(out, key=lambda r: (r.model, version_key(r.version)))


# ------------------------------------------------------------------------ approve, publish
def check_staged(ctx: Context, repo: Repository, ref: ReleaseRef, md: Metadata[Targets], verb: str,
                 role: str) -> None:
    """Refuse (naming what is wrong) unless ``md`` is exactly the release on its base.

    A release's own role (decision 1203) must be version 1 and list only the release's targets; the
    single ``releases`` role of an older repository must be the next version of the published one and
    change no target but the release's own. Every file it adds must be in the store with the signed
    length and hash.
    """
    if role not in (LEGACY_ROLE, release_roles.ReleaseRole(ref.model, ref.version).name):
        raise VerificationError(f"release {ref}: its state names role {role!r}, which is not this release's; "
                                f"refusing to {verb}")
    if role != LEGACY_ROLE and not repo.has_index():
        raise VerificationError(f"release {ref}: staged as its own role, but the repository has no "
                                f"{release_roles.INDEX} to delegate it; refusing to {verb}")
    base_version, base_targets = _base(repo, role)
    if md.signed.version != base_version + 1:
        if role != LEGACY_ROLE:
            raise VerificationError(f"release {ref}: its staged role is version {md.signed.version}, not 1; "
                                    f"refusing to {verb}")
        raise ConflictError(f"release {ref} was built on releases v{md.signed.version - 1}, but v"
                            f"{base_version} is published now; rebuild it and approve again")
    if md.signed.delegations is not None:
        raise VerificationError(f"release {ref}: the staged metadata delegates to other roles; refusing to {verb}")
    added = [p for p, tf in md.signed.targets.items() if base_targets.get(p) != tf]
    foreign = sorted([p for p in added if not belongs(p, ref.model, ref.version)]
                     + [p for p in base_targets if p not in md.signed.targets])
    if foreign:
        raise VerificationError(f"release {ref}: the staged metadata also changes other targets "
                                f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                                f"refusing to {verb}")
    for path in sorted(added):
        tf = md.signed.targets[path]
        key = layout.target_key(path, tf.hashes["sha256"])
        try:
            length, sha = ctx.store.digest(key)
        except NotFoundError:
            raise VerificationError(f"release {ref}: staged file {path} is missing from the store; "
                                    f"refusing to {verb}") from None
        if (length, sha) != (tf.length, tf.hashes["sha256"]):
            raise VerificationError(f"release {ref}: staged file {path} changed since the CI signature "
                                    f"(signed: {tf.length} bytes, sha256 {tf.hashes['sha256'][:16]}...; "
                                    f"found: {length} bytes, sha256 {sha[:16]}...); refusing to {verb}")


def approve(ctx: Context, spec: str, key_name: str | None) -> ReleaseInfo:
    ref = resolve(ctx, spec)
    current = info(ctx, ref)
    if current.status in ("published", "withdrawn"):
        raise UsageError(f"release {ref} is {current.status}; nothing to approve")
    if key_name is None:
        local = [k for k in ctx.trust.release_managers if ctx.signers.has_private(k)]
        if len(local) != 1:
            raise UsageError("say which release-manager key signs with --key "
                             f"(here: {', '.join(local) or 'none'})")
        key_name = local[0]
    if key_name not in ctx.trust.release_managers:
        raise UsageError(f"key {key_name!r} is not a release manager's key "
                         f"(release managers: {', '.join(ctx.trust.release_managers)})")
    versioned = ctx.store.get_versioned(staged_key(ref.model, ref.version))
    try:
        md: Metadata[Targets] = Metadata.from_bytes(versioned.data)
    except DeserializationError as exc:
        raise VerificationError(f"release {ref}: staged metadata is corrupt ({exc}); refusing to approve") from exc
    signers = _valid_signers(ctx, md)
    if not any(k in ctx.trust.ci_keys for k in signers):
        raise VerificationError(f"release {ref}: the staged metadata no longer carries a valid CI signature "
                                "(changed since the build); refusing to approve")
    check_staged(ctx, ctx.repository(), ref, md, "approve", _staged_role(_state_of(ctx, ref)))
    if key_name in signers:
        raise UsageError(f"release {ref} is already approved with key {key_name!r}")
    _sign_with(md, ctx, key_name)
    ctx.store.put_if(staged_key(ref.model, ref.version), to_bytes(md), versioned.etag)
    return info(ctx, ref)


def publish(ctx: Context, spec: str) -> ReleaseInfo:
    ref = resolve(ctx, spec)
    current = info(ctx, ref)
    if current.status == "published":
        return current
    if current.status == "withdrawn":
        raise UsageError(f"release {ref} is withdrawn")
    repo = ctx.repository()
    if ref.version in repo.published_releases(ref.model):
        return _mark_published(ctx, ref)  # published before a crash; finish the bookkeeping
    if current.status != "approved":
        raise VerificationError(
            f"release {ref}: {len(current.signed_by)} of {current.threshold} signatures; "
            f"missing one or more of: {', '.join(current.missing)}",
            hint=f"a release manager runs `otactl release approve {ref}`")
    md = _staged(ctx, ref)
    role = _staged_role(_state_of(ctx, ref))
    check_staged(ctx, repo, ref, md, "publish", role)
    if role == LEGACY_ROLE:
        repo.put_signed(LEGACY_ROLE, md)
    else:
        repo.add_release(release_roles.ReleaseRole(ref.model, ref.version), md)
    repo.publish()
    return _mark_published(ctx, ref)


def _state_of(ctx: Context, ref: ReleaseRef) -> dict[str, Any]:
    state = _load_state(ctx, ref.model, ref.version)
    if state is None:
        raise NotFoundError(f"release {ref}: no such release (see `otactl release list`)")
    return state


def _mark_published(ctx: Context, ref: ReleaseRef) -> ReleaseInfo:
    state, etag = _versioned_state(ctx, ref)
    state["status"] = "published"
    state["published"] = ctx.now.isoformat()
    ctx.store.put_if(state_key(ref.model, ref.version), json.dumps(state, indent=1).encode(), etag)
    return info(ctx, ref)
