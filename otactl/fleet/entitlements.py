"""Offline-signed entitlements: what a device may run (variant, paid features), bound to its key.

Decision 0406. The online ``devices`` key signs device records, but the entitlement inside a record
is signed by the entitlement signers, whom the online roles and the rollout controller never hold:

    entitlements/signers.json   a target in the top-level ``targets`` role (offline targets key):
                                the entitlement keys and their threshold; devices learn it via TUF
    statement                   per device, canonical JSON: device_id, model, hardware_revision,
                                public_key (the device key the record binds), variant, features,
                                version (per device, raised on every entitlement change)
    batch                       up to N statements (default 1024) under one RFC 6962 Merkle root;
                                the batch document (id, root, count, issued) carries >= threshold
                                signatures of entitlement keys
    proof (in the record)       the statement, the signed batch, the leaf index and its path

Everything here is pure (no I/O, no clock): signing takes ``Signer`` objects and the time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.exceptions import VerificationError as SignatureCheckError
from securesystemslib.signer import Key, Signature, Signer

from otactl.errors import OtactlError, VerificationError
from otactl.fleet import merkle
from otactl.release.bundle import canonical
from otactl.repo import layout

SIGNERS_PATH = "entitlements/signers.json"
SIGNERS_SCHEMA = "otactl/entitlement-signers/1"
STATEMENT_SCHEMA = "otactl/entitlement/1"
BATCH_SCHEMA = "otactl/entitlement-batch/1"
DEFAULT_BATCH_SIZE = 1024
MAX_BATCH_SIZE = 1 << 16  # a path of at most 16 hashes
MAX_VERSION = (1 << 53) - 1  # exact in every JSON implementation (tuf-js too)
_HEX_KEY = re.compile(r"^[0-9a-f]{64}\Z")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
_STATEMENT_FIELDS = frozenset({"schema", "device_id", "model", "hardware_revision", "public_key", "variant",
                               "features", "version"})
_BATCH_FIELDS = frozenset({"schema", "batch_id", "root", "count", "issued"})
_PROOF_FIELDS = frozenset({"statement", "batch", "index", "path"})


class EntitlementError(VerificationError):
    """An entitlement that does not verify; the message says which check failed."""


def _fields(doc: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ValueError(f"{what} must be an object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown field {unknown[0]!r}")
    missing = sorted(allowed - set(doc))
    if missing:
        raise ValueError(f"{what}: missing field {missing[0]!r}")
    return doc


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}")
    return value


def _name(kind: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be text")
    try:
        return layout.check_name(kind, value)
    except OtactlError as exc:
        raise ValueError(exc.message) from None


# ------------------------------------------------------------------------------------ statement
@dataclass(frozen=True)
class Statement:
    """One device's entitlement. ``grant`` is what needs the entitlement signers to change."""

    device_id: str
    model: str
    hardware_revision: str
    public_key: str
    variant: str
    features: tuple[str, ...]
    version: int

    def __post_init__(self) -> None:
        for kind in ("device_id", "model", "hardware_revision", "variant"):
            _name(kind.replace("_", " "), getattr(self, kind))
        if not isinstance(self.public_key, str) or not _HEX_KEY.match(self.public_key):
            raise ValueError("public_key must be an ed25519 public key, 64 lowercase hex digits")
        if not isinstance(self.features, tuple):
            raise ValueError("features must be a list of feature names")
        for feature in self.features:
            _name("feature", feature)
        if list(self.features) != sorted(set(self.features)):
            raise ValueError("features must be sorted and unique")
        _int(self.version, "version", 1, MAX_VERSION)

    @property
    def grant(self) -> tuple[str, str, str, str, str, tuple[str, ...]]:
        return (self.device_id, self.model, self.hardware_revision, self.public_key, self.variant, self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": STATEMENT_SCHEMA, "device_id": self.device_id, "model": self.model,
                "hardware_revision": self.hardware_revision, "public_key": self.public_key,
                "variant": self.variant, "features": list(self.features), "version": self.version}

    def to_bytes(self) -> bytes:
        return self._bytes

    @cached_property
    def _bytes(self) -> bytes:
        # canonical(self.to_dict()), spelled directly: every field is a checked name, hex or an integer,
        # which JSON writes without escapes (tests/unit/fleet/test_entitlement_attacks.py compares the two)
        features = '"' + '","'.join(self.features) + '"' if self.features else ""
        return (f'{{"device_id":"{self.device_id}","features":[{features}],'
                f'"hardware_revision":"{self.hardware_revision}","model":"{self.model}",'
                f'"public_key":"{self.public_key}","schema":"{STATEMENT_SCHEMA}","variant":"{self.variant}",'
                f'"version":{self.version}}}').encode()

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def of_checked(cls, device_id: str, model: str, hardware_revision: str, public_key: str, variant: str,
                   features: tuple[str, ...], version: int) -> Statement:
        """A statement from fields a ``DeviceRecord`` has already checked (the same rules): only the
        version is checked again. Spares a million-device import a second validation per device."""
        _int(version, "version", 1, MAX_VERSION)
        st = object.__new__(cls)
        st.__dict__.update(device_id=device_id, model=model, hardware_revision=hardware_revision,
                           public_key=public_key, variant=variant, features=features, version=version)
        return st

    @classmethod
    def from_dict(cls, doc: Any) -> Statement:
        d = _fields(doc, _STATEMENT_FIELDS, "statement")
        if d["schema"] != STATEMENT_SCHEMA:
            raise ValueError(f"statement: schema is not {STATEMENT_SCHEMA}")
        features = d["features"]
        if not isinstance(features, list):
            raise ValueError("statement: features must be a list")
        return cls(d["device_id"], d["model"], d["hardware_revision"], d["public_key"], d["variant"],
                   tuple(features), d["version"])


# ------------------------------------------------------------------------------------ batches
@dataclass(frozen=True)
class Batch:
    """The signed document of one batch: the Merkle root over ``count`` statements."""

    batch_id: str
    root: str  # hex
    count: int
    issued: str  # RFC 3339 UTC, seconds

    def __post_init__(self) -> None:
        _name("batch id", self.batch_id)
        if not isinstance(self.root, str) or not _HEX_KEY.match(self.root):
            raise ValueError("batch root must be 64 lowercase hex digits")
        _int(self.count, "batch count", 1, MAX_BATCH_SIZE)
        if not isinstance(self.issued, str) or not _TIME.match(self.issued):
            raise ValueError("batch issued must be a UTC time like 2027-03-01T12:00:00Z")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": BATCH_SCHEMA, "batch_id": self.batch_id, "root": self.root, "count": self.count,
                "issued": self.issued}

    def to_bytes(self) -> bytes:
        return canonical(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any) -> Batch:
        d = _fields(doc, _BATCH_FIELDS, "batch")
        if d["schema"] != BATCH_SCHEMA:
            raise ValueError(f"batch: schema is not {BATCH_SCHEMA}")
        return cls(d["batch_id"], d["root"], d["count"], d["issued"])


@dataclass(frozen=True)
class SignedBatch:
    batch: Batch
    signatures: tuple[Signature, ...]

    def to_dict(self) -> dict[str, Any]:
        """The signed batch as a record carries it (computed once: every record of a batch shares it;
        do not modify the result)."""
        return self._dict

    @cached_property
    def _dict(self) -> dict[str, Any]:
        return {"signed": self.batch.to_dict(), "signatures": [s.to_dict() for s in self.signatures]}

    def to_bytes(self) -> bytes:
        return self._bytes

    @cached_property
    def _bytes(self) -> bytes:
        return canonical(self._dict)

    @classmethod
    def from_dict(cls, doc: Any) -> SignedBatch:
        d = _fields(doc, frozenset({"signed", "signatures"}), "signed batch")
        sigs = d["signatures"]
        if not isinstance(sigs, list) or len(sigs) > 64:
            raise ValueError("signed batch: signatures must be a list (at most 64)")
        try:
            signatures = tuple(Signature.from_dict(dict(s)) for s in sigs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"signed batch: bad signature entry ({exc})") from None
        if any(not isinstance(s.keyid, str) or not isinstance(s.signature, str) for s in signatures):
            raise ValueError("signed batch: keyid and sig must be text")
        return cls(Batch.from_dict(d["signed"]), signatures)


@dataclass(frozen=True)
class Entitlement:
    """The proof a device record carries: its statement, the signed batch and the inclusion path."""

    statement: Statement
    batch: SignedBatch
    index: int
    path: tuple[str, ...]  # sibling hashes, hex, leaf to root

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement.to_dict(), "batch": self.batch.to_dict(), "index": self.index,
                "path": list(self.path)}

    def to_bytes(self) -> bytes:
        """``canonical(self.to_dict())``, from the statement's and the batch's bytes computed once (the
        index is an integer and the path hex: no escapes)."""
        path = '","'.join(self.path)
        return b'{"batch":%s,"index":%d,"path":[%s],"statement":%s}' % (
            self.batch.to_bytes(), self.index, f'"{path}"'.encode() if path else b"", self.statement.to_bytes())

    @classmethod
    def from_dict(cls, doc: Any) -> Entitlement:
        d = _fields(doc, _PROOF_FIELDS, "entitlement")
        path = d["path"]
        if not isinstance(path, list) or len(path) > 16 or \
                not all(isinstance(p, str) and _HEX_KEY.match(p) for p in path):
            raise ValueError("entitlement: path must be a list of at most 16 hashes (64 hex digits each)")
        index = _int(d["index"], "entitlement: index", 0, MAX_BATCH_SIZE - 1)
        return cls(Statement.from_dict(d["statement"]), SignedBatch.from_dict(d["batch"]), index,
                   tuple(path))


# ------------------------------------------------------------------------------------ signers
def _key_name(key: Key) -> str:
    return layout.key_name(key) or key.keyid[:12]


@dataclass(frozen=True)
class Signers:
    """The entitlement keys and their threshold, as ``entitlements/signers.json`` declares them."""

    keys: Mapping[str, Key]  # keyid -> public key
    threshold: int
    _checked: dict[bytes, None] = field(default_factory=dict, compare=False, repr=False)  # verified batches

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("entitlement signers: at least one key is needed")
        _int(self.threshold, "entitlement signers: threshold", 1, len(self.keys))
        for keyid, key in self.keys.items():
            if key.keyid != keyid:
                raise ValueError(f"entitlement signers: key {keyid[:12]}... has keyid {key.keyid[:12]}...")

    def names(self) -> list[str]:
        return sorted(_key_name(k) for k in self.keys.values())

    def to_bytes(self) -> bytes:
        return canonical({"schema": SIGNERS_SCHEMA, "threshold": self.threshold,
                          "keys": {kid: key.to_dict() for kid, key in self.keys.items()}})

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Signers:
        import json

        try:
            doc = _fields(json.loads(data), frozenset({"schema", "threshold", "keys"}), "signers")
            if doc["schema"] != SIGNERS_SCHEMA:
                raise ValueError(f"schema is not {SIGNERS_SCHEMA}")
            if not isinstance(doc["keys"], dict):
                raise ValueError("keys must be an object")
            keys = {kid: Key.from_dict(kid, dict(raw)) for kid, raw in doc["keys"].items()}
            return cls(keys, doc["threshold"])
        except (ValueError, TypeError, KeyError) as exc:
            raise VerificationError(f"{where}: not a valid entitlement signers document ({exc})") from None

    def check_batch(self, signed: SignedBatch) -> None:
        """Raise unless ``threshold`` distinct signers' signatures over the batch document verify."""
        data = signed.batch.to_bytes()
        memo = hashlib.sha256(canonical(signed.to_dict())).digest()
        if memo in self._checked:
            return
        valid: set[str] = set()
        for sig in signed.signatures:
            key = self.keys.get(sig.keyid)
            if key is None or sig.keyid in valid:
                continue
            try:
                key.verify_signature(sig, data)
            except (UnverifiedSignatureError, SignatureCheckError):
                continue
            valid.add(sig.keyid)
        if len(valid) < self.threshold:
            raise EntitlementError(
                f"batch {signed.batch.batch_id}: {len(valid)} of the {self.threshold} entitlement signatures "
                f"needed (signers: {', '.join(self.names())})")
        if len(self._checked) > 4096:
            self._checked.clear()
        self._checked[memo] = None

    def verify(self, ent: Entitlement, *, device_id: str, public_key: str) -> Statement:
        """The statement, once the batch carries the threshold, the path leads from the statement to
        the batch's root, and the statement names this device and this device key."""
        self.check_batch(ent.batch)
        root = merkle.root_from_path(merkle.leaf_hash(ent.statement.to_bytes()), ent.index, ent.batch.batch.count,
                                     [bytes.fromhex(p) for p in ent.path])
        if root is None or root.hex() != ent.batch.batch.root:
            raise EntitlementError(f"the statement is not in signed batch {ent.batch.batch.batch_id} (its Merkle "
                                   "path does not lead to the signed root)")
        st = ent.statement
        if st.device_id != device_id:
            raise EntitlementError(f"the entitlement is for device {st.device_id!r}, not {device_id!r}")
        if st.public_key != public_key:
            raise EntitlementError(f"the entitlement binds device key {st.public_key[:12]}..., not "
                                   f"{public_key[:12]}...")
        return st


@dataclass(frozen=True)
class Accepted:
    """The newest entitlement a verifier (a device) has accepted: its version and statement digest."""

    version: int
    digest: str


def check_fresh(statement: Statement, last: Accepted | None) -> str | None:
    """Why ``statement`` must not replace ``last`` (an older version, or another statement with the
    same version), or None. A replayed older entitlement would downgrade or revoke."""
    if last is None:
        return None
    if statement.version < last.version:
        return (f"entitlement version {statement.version} is older than version {last.version} which this "
                "device has already accepted (a replay)")
    if statement.version == last.version and statement.digest() != last.digest:
        return f"entitlement version {statement.version} differs from the version {last.version} already accepted"
    return None


# ------------------------------------------------------------------------------------ signing
def batch_time(now: datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_batch(statements: Sequence[Statement], signers: Sequence[Signer], *, batch_id: str,
               issued: datetime) -> list[Entitlement]:
    """One signed batch over ``statements``: each statement's proof, in order."""
    if not 1 <= len(statements) <= MAX_BATCH_SIZE:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_SIZE} statements")
    leaves = [merkle.leaf_hash(s.to_bytes()) for s in statements]
    root, paths = merkle.tree_hex(leaves)
    batch = Batch(batch_id, root.hex(), len(statements), batch_time(issued))
    data = batch.to_bytes()
    signed = SignedBatch(batch, tuple(s.sign(data) for s in signers))
    return [Entitlement(st, signed, i, tuple(p)) for i, (st, p) in enumerate(zip(statements, paths, strict=True))]


def sign_in_batches(statements: Iterable[Statement], signers: Sequence[Signer], *, issued: datetime,
                    batch_size: int = DEFAULT_BATCH_SIZE, first: int = 0) -> Iterator[Entitlement]:
    """Proofs for ``statements`` in batches of ``batch_size``, ids ``<issued>-<n>`` from ``first``."""
    _int(batch_size, "batch size", 1, MAX_BATCH_SIZE)
    stamp = batch_time(issued).replace("-", "").replace(":", "")
    pending: list[Statement] = []
    n = first
    for st in statements:
        pending.append(st)
        if len(pending) == batch_size:
            yield from sign_batch(pending, signers, batch_id=f"{stamp}-{n}", issued=issued)
            pending, n = [], n + 1
    if pending:
        yield from sign_batch(pending, signers, batch_id=f"{stamp}-{n}", issued=issued)
