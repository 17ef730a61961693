"""Key management services: generate (in the workspace, or as files on a release manager's own
machine), add by public key, list, rotate (root included)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import otactl.keys.keyfile as keyfile
from otactl.app.context import Context
from otactl.errors import StoreError, UsageError
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY
from otactl.workspace import HANDOVER_DIR, KEY_DIR, KeyEntry, RoleEntry, TrustConfig


@dataclass(frozen=True)
class KeyRow:
    name: str
    keyid: str
    roles: list[str]
    private_available: bool
    uri: str


@dataclass(frozen=True)
class RotateResult:
    old: str
    new: str
    new_keyid: str
    root_version: int


def _new_key(ctx: Context, name: str, *, release_manager: bool = False) -> tuple[KeyEntry, Path]:
    """A new encrypted key in the workspace; a release manager's in its own directory to hand over."""
    layout.check_name("key name", name)
    if name in ctx.trust.keys:
        raise UsageError(f"{ctx.trust.path}: a key named {name!r} already exists")
    rel = f"{HANDOVER_DIR}/{name}/{name}.key" if release_manager else f"{KEY_DIR}/{name}.key"
    path = ctx.workspace.root / rel
    if release_manager:
        (ctx.workspace.root / HANDOVER_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
    pub = keyfile.generate_keyfile(path, name, keyfile.get_passphrase(name, confirm=True))
    return KeyEntry(name, pub.keyid, pub.keyval["public"], f"otactl-file:{rel}"), path


def _journaled(ctx: Context, public_hex: str) -> bool:
    """Whether a pending publication journal carries this new key: it will be completed, and then
    the repository trusts the key, so deleting its file would lose a role's only key."""
    try:
        journal = ctx.store.get_optional(JOURNAL_KEY)
    except StoreError:
        return True  # cannot tell: keeping an unused key file is harmless, deleting a trusted one is not
    return journal is not None and public_hex.encode() in journal


def generate_key(ctx: Context, name: str, *, release_manager: bool) -> KeyEntry:
    entry, path = _new_key(ctx, name, release_manager=release_manager)
    _register(ctx, entry, release_manager=release_manager, made=path)
    if release_manager:  # beside the key, the root its owner pins when joining (public)
        (path.parent / "root.json").write_bytes(ctx.store.get(layout.metadata_key("root", None)))
    return entry


def add_public_key(ctx: Context, name: str, public_file: Path, *, release_manager: bool) -> KeyEntry:
    """Register someone's key by its public half (``NAME.pub``); its private key stays with them."""
    layout.check_name("key name", name)
    if name in ctx.trust.keys:
        raise UsageError(f"{ctx.trust.path}: a key named {name!r} already exists")
    _, public = keyfile.read_public(public_file)
    existing = ctx.trust.key_by_id(public.keyid)
    if existing is not None:
        raise UsageError(f"{public_file}: this key is already in {ctx.trust.path} (as {existing.name!r})")
    entry = KeyEntry(name, public.keyid, public.keyval["public"], f"{keyfile.OWNER_SCHEME}:{name}")
    return _register(ctx, entry, release_manager=release_manager, made=None)


def _register(ctx: Context, entry: KeyEntry, *, release_manager: bool, made: Path | None) -> KeyEntry:
    name = entry.name
    keys = {**ctx.trust.keys, name: entry}
    trust = replace(ctx.trust, keys=keys)
    if release_manager:
        # a release manager approves (releases) and withdraws (withdrawals, when the workspace has it)
        grows = [r for r in ("releases", "withdrawals") if r in trust.roles]
        roles = dict(trust.roles)
        for r in grows:
            roles[r] = RoleEntry((*roles[r].keys, name), roles[r].threshold, roles[r].expires_days)
        trust = replace(trust, roles=roles, release_managers=(*trust.release_managers, name))
        try:
            ctx.trust = trust
            ctx.signers.trust = trust
            repo = ctx.repository()
            for r in grows:
                repo.edit("targets").add_key(layout.name_key(keyfile.public_key(entry.public), name), r)
            repo.publish()
        except BaseException:
            if _journaled(ctx, entry.public):  # `otactl repo publish` will complete it: keep the key
                ctx.workspace.write_trust(trust)
            elif made is not None:
                made.unlink(missing_ok=True)
            raise
    ctx.workspace.write_trust(trust)
    return entry


@dataclass(frozen=True)
class GeneratedKey:
    name: str
    keyid: str
    key_file: Path
    public_file: Path


def generate_key_files(out_dir: Path, name: str) -> GeneratedKey:
    """On a release manager's own machine: ``DIR/NAME.key`` (encrypted, 0600) and ``DIR/NAME.pub``
    (the public half, for whoever runs ``otactl init --release-manager NAME=NAME.pub``)."""
    layout.check_name("key name", name)
    key_file, public_file = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (key_file, public_file):
        if path.exists():
            raise UsageError(f"{path}: already exists; refusing to overwrite it")
    pub = keyfile.generate_keyfile(key_file, name, keyfile.get_passphrase(name, confirm=True))
    try:
        keyfile.write_public(public_file, name, pub)
    except BaseException:
        key_file.unlink(missing_ok=True)
        raise
    return GeneratedKey(name, pub.keyid, key_file, public_file)


def list_keys(ctx: Context) -> list[KeyRow]:
    return [
        KeyRow(k.name, k.keyid, [r for r, e in ctx.trust.roles.items() if k.name in e.keys],
               ctx.signers.has_private(k.name), k.uri)
        for k in ctx.trust.keys.values()
    ]


def _next_name(trust: TrustConfig, role: str) -> str:
    n = 2
    while f"{role}-{n}" in trust.keys:
        n += 1
    return f"{role}-{n}"


def rotate_key(ctx: Context, role: str, old: str | None, public_file: Path | None = None) -> RotateResult:
    """Replace a role's key. ``role`` may also name a release manager's key: a release manager's key
    is replaced in every role that lists it (``releases`` and ``withdrawals``), by the public half
    made on their machine (``public_file``; the private key never reaches this one)."""
    if role not in ctx.trust.roles and role in ctx.trust.release_managers and old in (None, role):
        role, old = next(r for r, e in ctx.trust.roles.items() if role in e.keys), role
    if role not in ctx.trust.roles:
        raise UsageError(f"no role {role!r}; roles: {', '.join(ctx.trust.roles)} (or a release manager's key: "
                         f"{', '.join(ctx.trust.release_managers) or 'none'})")
    entry = ctx.trust.roles[role]
    if old is None:
        if len(entry.keys) != 1:
            raise UsageError(f"role {role!r} has {len(entry.keys)} keys; say which with --key")
        old = entry.keys[0]
    if old not in entry.keys:
        raise UsageError(f"key {old!r} does not sign for role {role!r}")
    if old in ctx.trust.release_managers:
        return rotate_release_manager(ctx, old, public_file)
    if public_file is not None:
        raise UsageError(f"--public: key {old!r} is not a release manager's key; CI signs {role!r} with it, so its "
                         "new key is made here (leave out --public)")
    repo = ctx.repository()  # fail early on an unusable store, before making a key
    from otactl.app import director
    from otactl.repo.director import ROLE_KEYS

    if role in ROLE_KEYS.values() and director.enabled(repo):
        raise UsageError(f"role {role!r} also signs the director's device chains (decision 0407), whose root "
                         "does not follow a key rotation yet; nothing was changed",
                         hint="docs/decisions/0407-per-device-director-metadata.md lists what is not built")
    new_entry, new_path = _new_key(ctx, _next_name(ctx.trust, role))
    old_keyid = ctx.trust.key(old).keyid
    new_pub = layout.name_key(keyfile.public_key(new_entry.public), new_entry.name)
    roles = dict(ctx.trust.roles)
    roles[role] = RoleEntry(tuple(new_entry.name if k == old else k for k in entry.keys),
                            entry.threshold, entry.expires_days)
    trust = replace(ctx.trust, keys={**ctx.trust.keys, new_entry.name: new_entry}, roles=roles)
    try:
        repo.trust = trust
        ctx.signers.trust = trust
        if role in layout.TOP_LEVEL:
            root = repo.edit_root()
            root.revoke_key(old_keyid, role)
            root.add_key(new_pub, role)
            if role == "targets":
                repo.edit("targets")
        else:
            targets = repo.edit("targets")
            targets.revoke_key(old_keyid, role)
            targets.add_key(new_pub, role)
            repo.edit(role)
            if role == "devices":
                devices = repo.edit("devices")
                devices.revoke_key(old_keyid)
                devices.add_key(new_pub)
                for name in repo.role_names():
                    if name.startswith(f"{layout.BIN_PREFIX}-"):
                        repo.edit(name)
        repo.publish()
    except BaseException:
        if _journaled(ctx, new_entry.public):  # `otactl repo publish` will complete it: keep the key
            ctx.workspace.write_trust(trust)
        else:
            new_path.unlink(missing_ok=True)
        raise
    still_used = any(old in r.keys for r in trust.roles.values())
    if not still_used:
        trust = replace(trust, keys={k: v for k, v in trust.keys.items() if k != old},
                        ci_keys=tuple(k for k in trust.ci_keys if k != old),
                        release_managers=tuple(k for k in trust.release_managers if k != old))
        old_file = ctx.workspace.root / KEY_DIR / f"{old}.key"
        if old_file.exists():
            retired = ctx.workspace.root / KEY_DIR / "retired"
            retired.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(OSError):
                os.replace(old_file, retired / old_file.name)
    if role in layout.TOP_LEVEL or role == "root":
        from otactl.workspace import ROOT_FILE

        (ctx.workspace.root / ROOT_FILE).write_bytes(ctx.store.get(layout.metadata_key("root", None)))
    ctx.workspace.write_trust(trust)
    return RotateResult(old, new_entry.name, new_entry.keyid, repo.root.signed.version)


def _rm_entry(ctx: Context, name: str, public_file: Path | None) -> tuple[KeyEntry, Path | None]:
    """The release manager's new key: by its public half, or (a lab: the old key is here) made here."""
    if public_file is not None:
        _, public = keyfile.read_public(public_file)  # a private key file is refused
        existing = ctx.trust.key_by_id(public.keyid)
        if existing is not None:
            raise UsageError(f"{public_file}: this key is already in {ctx.trust.path} (as {existing.name!r}); "
                             f"{name} makes a new one (`otactl keys generate {name} --out DIR`)")
        return KeyEntry(name, public.keyid, public.keyval["public"], f"{keyfile.OWNER_SCHEME}:{name}"), None
    if not ctx.signers.has_private(name):
        raise UsageError(f"key {name!r} is a release manager's key held on their own machine; its new key is made "
                         f"there too: {name} runs `otactl keys generate {name} --out DIR` and sends DIR/{name}.pub",
                         hint=f"then `otactl keys rotate {name} --public {name}.pub`")
    n = 2
    while (ctx.workspace.root / KEY_DIR / f"{name}-{n}.key").exists():
        n += 1
    rel = f"{KEY_DIR}/{name}-{n}.key"
    path = ctx.workspace.root / rel
    pub = keyfile.generate_keyfile(path, name, keyfile.get_passphrase(name, confirm=True))
    return KeyEntry(name, pub.keyid, pub.keyval["public"], f"otactl-file:{rel}"), path


def rotate_release_manager(ctx: Context, name: str, public_file: Path | None) -> RotateResult:
    """Replace release manager ``name``'s key in ``releases`` and ``withdrawals``; the name stays (plans and
    approvals name the person). The published metadata of both roles must still meet its threshold
    without the old key's signature, or be re-signed to it with the keys here (a lab); else refused."""
    from otactl.repo.canonical import CANONICAL

    old_entry = ctx.trust.key(name)
    roles_of = [r for r in ("releases", "withdrawals") if r in ctx.trust.roles and name in ctx.trust.roles[r].keys]
    repo = ctx.repository()  # fail early on an unusable store, before anything is made
    new_entry, new_path = _rm_entry(ctx, name, public_file)
    trust = replace(ctx.trust, keys={**ctx.trust.keys, name: new_entry})
    new_pub = layout.name_key(keyfile.public_key(new_entry.public), name)
    try:
        repo.trust = trust
        ctx.signers.trust = trust
        ctx.signers.forget(name)
        targets = repo.edit("targets")
        for r in roles_of:
            targets.revoke_key(old_entry.keyid, r)
            targets.add_key(new_pub, r)
        for r in roles_of:
            if f"{r}.json" not in repo.snapshot.signed.meta:
                continue  # not published yet (staged for the release managers: decision 1105)
            md = repo.role(r)
            result = targets.get_verification_result(r, CANONICAL.serialize(md.signed), md.signatures)
            if result.verified:
                continue
            role = trust.roles[r]
            if sum(ctx.signers.has_private(k) for k in role.keys) >= role.threshold:
                repo.edit(r)  # a lab: the keys here re-sign it
                continue
            raise UsageError(f"role {r!r} v{md.signed.version} counts {name}'s old signature: without it, "
                             f"{len(result.signed)} of the {role.threshold} signatures it needs, and the keys here "
                             f"cannot sign it (devices would refuse it); nothing was changed",
                             hint=f"rotate {name} once a {r} version that other release managers signed is "
                                  "published (docs/decisions/1105-key-custody.md)")
        repo.publish()
    except BaseException:
        ctx.signers.trust = ctx.trust
        if _journaled(ctx, new_entry.public):  # `otactl repo publish` will complete it: keep the key
            ctx.workspace.write_trust(trust)
        elif new_path is not None:
            new_path.unlink(missing_ok=True)
        raise
    ctx.workspace.write_trust(trust)
    ctx.trust = trust
    old_file = ctx.workspace.root / KEY_DIR / f"{name}.key"
    if new_path is not None and old_file.exists():
        (ctx.workspace.root / KEY_DIR / "retired").mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.replace(old_file, ctx.workspace.root / KEY_DIR / "retired" / old_file.name)
    return RotateResult(name, name, new_entry.keyid, repo.root.signed.version)
