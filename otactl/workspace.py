"""A release workspace: trust configuration in ``signing/``, private keys in ``.otactl/``.

    WORKSPACE/
      otactl.yaml            store URL and endpoint
      signing/trust.yaml     roles, thresholds, public keys, key URIs (committed)
      signing/root.json      the current root: the trust anchor devices ship with
      manifests/  canary/    release manifests and rollout plans
      .otactl/keys/*.key     encrypted private keys (mode 0600; never committed)
      .otactl/handover/NAME/ a release manager's key made here (lab mode): to be moved to its owner

A release manager's signer workspace (``otactl join``, decision 1105) holds no trust file and no
other key: its ``otactl.yaml`` (schema ``otactl/signer/1``) names the store, the signer's own key,
and ``signing/root.json``, the root it pins; the rest it learns from the signed metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from otactl.errors import KeyAccessError, UsageError
from otactl.yamlio import YamlDoc, check_keys, load_yaml

if TYPE_CHECKING:
    from otactl.store import BlobStore

WORKSPACE_FILE = "otactl.yaml"
TRUST_FILE = "signing/trust.yaml"
ROOT_FILE = "signing/root.json"
KEY_DIR = ".otactl/keys"
HANDOVER_DIR = ".otactl/handover"
TUF_CLIENT_DIR = ".otactl/tuf"  # a signer workspace's TUF client: the metadata it verified
WORKSPACE_SCHEMA = "otactl/workspace/1"
SIGNER_SCHEMA = "otactl/signer/1"

DEFAULT_EXPIRY_DAYS = {
    "root": 365, "targets": 365, "releases": 365,
    "snapshot": 7, "timestamp": 1, "rollouts": 7, "devices": 7, "withdrawals": 365, "release-index": 7,
}
# Roles a trust file may leave out: a repository made before signed withdrawal (decision 0502) has no
# withdrawals, one made before per-release roles (decision 1203) no release-index.
OPTIONAL_ROLES = ("withdrawals", "release-index")


@dataclass(frozen=True)
class KeyEntry:
    name: str
    keyid: str
    public: str  # ed25519 public key, hex
    uri: str  # securesystemslib private key URI (otactl-file:, awskms:, gcpkms:, hsm:, ...)


@dataclass(frozen=True)
class RoleEntry:
    keys: tuple[str, ...]
    threshold: int
    expires_days: int


@dataclass(frozen=True)
class TrustConfig:
    keys: dict[str, KeyEntry]
    roles: dict[str, RoleEntry]
    ci_keys: tuple[str, ...]
    release_managers: tuple[str, ...]
    bin_bit_length: int
    path: str = TRUST_FILE
    extra: dict[str, Any] = field(default_factory=dict)
    # entitlement signers (decision 0406): never an online role's keys; empty before the migration
    entitlement_keys: tuple[str, ...] = ()
    entitlement_threshold: int = 1

    def role(self, name: str) -> RoleEntry:
        if name.startswith("devices-"):
            name = "devices"
        try:
            return self.roles[name]
        except KeyError:
            raise UsageError(f"{self.path}: no role {name!r}") from None

    def key(self, name: str) -> KeyEntry:
        try:
            return self.keys[name]
        except KeyError:
            raise KeyAccessError(f"{self.path}: no key named {name!r}") from None

    def key_by_id(self, keyid: str) -> KeyEntry | None:
        return next((k for k in self.keys.values() if k.keyid == keyid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "otactl/trust/1",
            "keys": {
                k.name: {"keyid": k.keyid, "public": k.public, "uri": k.uri}
                for k in self.keys.values()
            },
            "roles": {
                n: {"keys": list(r.keys), "threshold": r.threshold, "expires_days": r.expires_days}
                for n, r in self.roles.items()
            },
            "ci_keys": list(self.ci_keys),
            "release_managers": list(self.release_managers),
            "devices": {"bin_bit_length": self.bin_bit_length},
            **({"entitlements": {"keys": list(self.entitlement_keys), "threshold": self.entitlement_threshold}}
               if self.entitlement_keys else {}),
        }


def parse_trust(doc: YamlDoc) -> TrustConfig:
    top = check_keys(doc, (), doc.data,
                     {"schema", "keys", "roles", "ci_keys", "release_managers", "devices", "entitlements"},
                     {"schema", "keys", "roles"})
    if top["schema"] != "otactl/trust/1":
        raise doc.error(("schema",), "expected otactl/trust/1")
    keys: dict[str, KeyEntry] = {}
    for name, raw in check_keys(doc, ("keys",), top["keys"], set(top["keys"])).items():
        entry = check_keys(doc, ("keys", name), raw, {"keyid", "public", "uri"}, {"keyid", "public", "uri"})
        keys[name] = KeyEntry(name, str(entry["keyid"]), str(entry["public"]), str(entry["uri"]))
    roles: dict[str, RoleEntry] = {}
    for name, raw in check_keys(doc, ("roles",), top["roles"], set(DEFAULT_EXPIRY_DAYS)).items():
        entry = check_keys(doc, ("roles", name), raw, {"keys", "threshold", "expires_days"},
                           {"keys", "threshold"})
        role_keys = entry["keys"]
        if not isinstance(role_keys, list) or not role_keys:
            raise doc.error(("roles", name, "keys"), "must be a non-empty list of key names")
        for i, k in enumerate(role_keys):
            if k not in keys:
                raise doc.error(("roles", name, "keys", i), f"unknown key {k!r}")
        threshold = entry["threshold"]
        if not isinstance(threshold, int) or not 1 <= threshold <= len(role_keys):
            raise doc.error(("roles", name, "threshold"), f"must be an integer from 1 to {len(role_keys)}")
        days = entry.get("expires_days", DEFAULT_EXPIRY_DAYS[name])
        if not isinstance(days, int) or days < 1:
            raise doc.error(("roles", name, "expires_days"), "must be a positive integer")
        roles[name] = RoleEntry(tuple(role_keys), threshold, days)
    for required in DEFAULT_EXPIRY_DAYS:
        if required not in roles and required not in OPTIONAL_ROLES:
            raise doc.error(("roles",), f"missing role {required!r}")
    devices = check_keys(doc, ("devices",), top.get("devices", {}), {"bin_bit_length"})
    bits = devices.get("bin_bit_length", 4)
    if not isinstance(bits, int) or not 0 <= bits <= 16:
        raise doc.error(("devices", "bin_bit_length"), "must be an integer from 0 to 16")
    lists = {}
    for fld in ("ci_keys", "release_managers"):
        value = top.get(fld, [])
        if not isinstance(value, list) or any(v not in keys for v in value):
            raise doc.error((fld,), "must be a list of key names defined under keys")
        lists[fld] = tuple(value)
    ent_keys, ent_threshold = _entitlements(doc, top.get("entitlements"), keys, roles)
    return TrustConfig(keys, roles, lists["ci_keys"], lists["release_managers"], bits, doc.path,
                       entitlement_keys=ent_keys, entitlement_threshold=ent_threshold)


def _entitlements(doc: YamlDoc, raw: Any, keys: dict[str, KeyEntry], roles: dict[str, RoleEntry]
                  ) -> tuple[tuple[str, ...], int]:
    """``entitlements: {keys: [...], threshold: k}``: the entitlement signers (decision 0406)."""
    if raw is None:
        return (), 1
    entry = check_keys(doc, ("entitlements",), raw, {"keys", "threshold"}, {"keys"})
    names = entry["keys"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise doc.error(("entitlements", "keys"), "must be a non-empty list of distinct key names")
    online = {k for role in ("snapshot", "timestamp", "rollouts", "devices") if role in roles for k in roles[role].keys}
    for i, k in enumerate(names):
        if k not in keys:
            raise doc.error(("entitlements", "keys", i), f"unknown key {k!r}")
        if k in online:
            raise doc.error(("entitlements", "keys", i), f"key {k!r} signs an online role; an entitlement key "
                            "must be held by no online role")
    threshold = entry.get("threshold", 1)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= len(names):
        raise doc.error(("entitlements", "threshold"), f"must be an integer from 1 to {len(names)}")
    return tuple(names), threshold


def find_root(start: Path) -> Path:
    """The nearest directory from ``start`` upwards that holds :data:`WORKSPACE_FILE` (as git finds
    ``.git``); ``start`` itself when none does, so :meth:`Workspace.open` names it in its error."""
    here = start.resolve()
    for candidate in (here, *here.parents):
        if (candidate / WORKSPACE_FILE).is_file():
            return candidate
    return here


@dataclass(frozen=True)
class Workspace:
    root: Path
    store_url: str
    endpoint_url: str | None
    actor: str | None = None  # the key that signs this workspace's operator actions by default

    @classmethod
    def open(cls, path: Path | str = ".") -> Workspace:
        root = Path(path).resolve()
        cfg_path = root / WORKSPACE_FILE
        if not cfg_path.is_file():
            raise UsageError(f"{root}: not an otactl workspace (no {WORKSPACE_FILE}); run `otactl init` first",
                             hint="pass --workspace DIR or run inside the workspace")
        doc = load_yaml(cfg_path)
        if isinstance(doc.data, dict) and doc.data.get("schema") == SIGNER_SCHEMA:
            raise UsageError(f"{root}: a release manager's signer workspace (otactl join): it reviews, approves, "
                             "withdraws and reinstates releases and approves rings only (`otactl release "
                             "review|approve|withdraw|reinstate|list`, `otactl rollout approve`)",
                             hint="run other commands in the CI workspace")
        top = check_keys(doc, (), doc.data, {"schema", "store", "s3_endpoint_url", "actor"}, {"schema", "store"})
        if top["schema"] != WORKSPACE_SCHEMA:
            raise doc.error(("schema",), f"expected {WORKSPACE_SCHEMA} (or {SIGNER_SCHEMA})")
        store = str(top["store"])
        if store.startswith("file://") and not store.startswith("file:///"):
            store = "file://" + str((root / store.removeprefix("file://")).resolve())
        actor = top.get("actor")
        if actor is not None and not isinstance(actor, str):
            raise UsageError(f"{cfg_path}: actor: must be a key name, got {actor!r:.60}")
        return cls(root, store, top.get("s3_endpoint_url"), actor)

    def trust(self) -> TrustConfig:
        return parse_trust(load_yaml(self.root / TRUST_FILE))

    def write_trust(self, trust: TrustConfig) -> None:
        from otactl.fsutil import atomic_write

        text = "# otactl trust configuration: public keys and key URIs only (no secrets)\n"
        text += yaml.safe_dump(trust.to_dict(), sort_keys=False)
        atomic_write(self.root / TRUST_FILE, text.encode())

    def store(self) -> BlobStore:
        from otactl.store import open_store

        return open_store(self.store_url, endpoint_url=self.endpoint_url)

    def resolve_uri(self, uri: str) -> str:
        """Relative ``otactl-file:`` URIs are relative to the workspace."""
        scheme, _, rest = uri.partition(":")
        if scheme == "otactl-file" and not rest.startswith("/"):
            return f"otactl-file:{self.root / rest}"
        return uri


def is_signer_workspace(path: Path | str) -> bool:
    """Whether ``path`` holds a signer workspace's ``otactl.yaml`` (read leniently: open() judges it)."""
    cfg = Path(path) / WORKSPACE_FILE
    if not cfg.is_file():
        return False
    doc = load_yaml(cfg)
    return isinstance(doc.data, dict) and doc.data.get("schema") == SIGNER_SCHEMA


@dataclass(frozen=True)
class SignerWorkspace:
    """A release manager's own directory: the store, one key (its URI and public half), a pinned root."""

    root: Path
    store_url: str
    endpoint_url: str | None
    name: str  # the signer's key name, as given at join (the signed metadata's name wins)
    key_uri: str  # otactl-file:PATH (relative to the workspace) or a KMS/HSM URI
    public: str  # ed25519 public key, hex

    @property
    def pinned_root(self) -> Path:
        return self.root / ROOT_FILE

    @property
    def client_dir(self) -> Path:
        return self.root / TUF_CLIENT_DIR

    @classmethod
    def open(cls, path: Path | str) -> SignerWorkspace:
        root = Path(path).resolve()
        doc = load_yaml(root / WORKSPACE_FILE)
        top = check_keys(doc, (), doc.data, {"schema", "store", "s3_endpoint_url", "key"},
                         {"schema", "store", "key"})
        if top["schema"] != SIGNER_SCHEMA:
            raise doc.error(("schema",), f"expected {SIGNER_SCHEMA}")
        key = check_keys(doc, ("key",), top["key"], {"name", "uri", "public"}, {"name", "uri", "public"})
        for fld in ("name", "uri", "public"):
            if not isinstance(key[fld], str) or not key[fld]:
                raise doc.error(("key", fld), "must be a non-empty string")
        endpoint = top.get("s3_endpoint_url")
        return cls(root, str(top["store"]), None if endpoint is None else str(endpoint), key["name"],
                   key["uri"], key["public"])

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"schema": SIGNER_SCHEMA, "store": self.store_url}
        if self.endpoint_url:
            doc["s3_endpoint_url"] = self.endpoint_url
        doc["key"] = {"name": self.name, "uri": self.key_uri, "public": self.public}
        return ("# otactl signer workspace: one release manager's key and the root it pins (no other key)\n"
                + yaml.safe_dump(doc, sort_keys=False))
