"""Per-device director metadata (decision 0407): each device's record behind its own small TUF chain.

Uptane's director repository, in python-tuf terms. One director ``root`` serves every device; each
device has its own ``timestamp``, ``snapshot`` and ``targets`` listing one target, its record
``devices/<id>.json``. A change to one device re-signs that device's three files and nothing else, so
another device's poll stays a timestamp of the image repository plus its own director timestamp, and a
rollout step (the image repository) no longer carries a snapshot entry per hash bin.

    director/metadata/<N>.root.json            the director's root chain (root keys = the image root's)
    director/metadata/root.json                the newest of them
    director/devices/<id>/timestamp.json, <v>.snapshot.json, <v>.targets.json
    targets/devices/<sha256>.<id>.json         the record, content-addressed as every target
    director/index/<xx>.tsv                    the fleet index (``otactl.fleet.index``)

The director's roles are signed by the keys the image repository's trust file already names: root by
the ``root`` keys (offline), targets by the ``devices`` keys, snapshot and timestamp by theirs (online).
The director's first root is also a target of the image repository's top-level ``targets`` role
(``director/root.json``, the offline targets key), which is how a device provisioned with only the image
root learns to trust it (and how a repository made with hash bins migrates). A device fetches
``<N>.root.json`` from the shared root chain (:class:`DirectorFetcher` maps its per-device URL), so a
director root rotation writes one file, not one per device.

Everything here is pure: signing takes ``Signer`` objects and the time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface

from otactl.repo.canonical import CANONICAL

ROOT_TARGET = "director/root.json"  # in the image repository's top-level targets: the director's root
# director role -> the image repository's trust role whose keys and threshold sign it
ROLE_KEYS: dict[str, str] = {"root": "root", "targets": "devices", "snapshot": "snapshot", "timestamp": "timestamp"}
_SERIALIZER = JSONSerializer(compact=True)
_ROOT_URL = re.compile(r"^(?P<base>.*/)director/devices/[^/]+/(?P<file>\d+\.root\.json)\Z")


def root_key(version: int | None) -> str:
    return "director/metadata/root.json" if version is None else f"director/metadata/{version}.root.json"


def device_prefix(device_id: str) -> str:
    return f"director/devices/{device_id}/"  # one directory per device (ngclient wants a base URL ending in /)


def device_key(device_id: str, role: str, version: int | None) -> str:
    name = f"{role}.json" if version is None else f"{version}.{role}.json"
    return device_prefix(device_id) + name


def make_root(keys: Mapping[str, Sequence[Key]], thresholds: Mapping[str, int], expires: datetime,
              version: int = 1) -> Metadata[Root]:
    """The director's root: ``keys``/``thresholds`` per director role (see ``ROLE_KEYS``)."""
    root = Root(version=version, expires=expires, consistent_snapshot=True)
    for role in ROLE_KEYS:
        for key in keys[role]:
            root.add_key(key, role)
        root.roles[role].threshold = thresholds[role]
    return Metadata(root)


def sign_root(root: Metadata[Root], signers: Sequence[Signer]) -> bytes:
    root.signatures.clear()
    for signer in signers:
        root.sign(signer, append=True, signed_serializer=CANONICAL)
    root.signed.verify_delegate("root", CANONICAL.serialize(root.signed), root.signatures)
    return root.to_bytes(_SERIALIZER)


def _signed(md: Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp], signers: Sequence[Signer]) -> bytes:
    for signer in signers:
        md.sign(signer, append=True, signed_serializer=CANONICAL)
    return md.to_bytes(_SERIALIZER)


def device_chain(device_id: str, record: TargetFile, version: int, expires: datetime,
                 signers: Mapping[str, Sequence[Signer]]) -> list[tuple[str, bytes]]:
    """One device's targets, snapshot and timestamp (all at ``version``), in publication order: the
    timestamp last, since it is what makes the others visible to the device."""
    targets = Metadata(Targets(version=version, expires=expires, targets={record.path: record}))
    targets_bytes = _signed(targets, signers["targets"])
    snapshot = Metadata(Snapshot(version=version, expires=expires, meta={
        "targets.json": MetaFile(version, len(targets_bytes), {"sha256": hashlib.sha256(targets_bytes).hexdigest()})}))
    snapshot_bytes = _signed(snapshot, signers["snapshot"])
    timestamp = Metadata(Timestamp(version=version, expires=expires, snapshot_meta=MetaFile(
        version, len(snapshot_bytes), {"sha256": hashlib.sha256(snapshot_bytes).hexdigest()})))
    return [(device_key(device_id, "targets", version), targets_bytes),
            (device_key(device_id, "snapshot", version), snapshot_bytes),
            (device_key(device_id, "timestamp", None), _signed(timestamp, signers["timestamp"]))]


def device_role(device_id: str, role: str, record: TargetFile, version: int, expires: datetime,
                signers: Sequence[Signer]) -> bytes:
    """One file of a device's chain as a director service signs it on request (decision 0408): like
    :func:`device_chain` but each file names the next by version only (TUF's hashes and length are
    optional there), so each request signs just the file it asks for and signers need not be
    deterministic. ``role``: targets, snapshot or timestamp."""
    if role == "targets":
        md: Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp] = Metadata(
            Targets(version=version, expires=expires, targets={record.path: record}))
    elif role == "snapshot":
        md = Metadata(Snapshot(version=version, expires=expires, meta={"targets.json": MetaFile(version)}))
    elif role == "timestamp":
        md = Metadata(Timestamp(version=version, expires=expires, snapshot_meta=MetaFile(version)))
    else:
        raise ValueError(f"not a device chain role: {role!r}")
    return _signed(md, signers)


SERVED_URL = re.compile(r"^director/devices/(?P<id>[^/]+)/(?:(?P<role>timestamp)\.json|(?P<version>\d+)\."
                        r"(?P<vrole>snapshot|targets|root)\.json)\Z")


def read_chain(root: Metadata[Root], device_id: str, get: Callable[[str], bytes]) -> tuple[int, TargetFile | None]:
    """Verify a device's published chain as its client would (signatures, hashes; not expiry): its
    version and its record's entry (None when the chain lists none). Raises ``ValueError`` or
    python-tuf's errors on a chain that does not verify."""
    ts_bytes = get(device_key(device_id, "timestamp", None))
    ts: Metadata[Timestamp] = Metadata.from_bytes(ts_bytes)
    root.signed.verify_delegate("timestamp", CANONICAL.serialize(ts.signed), ts.signatures)
    snap_meta = ts.signed.snapshot_meta
    snap_bytes = get(device_key(device_id, "snapshot", snap_meta.version))
    snap_meta.verify_length_and_hashes(snap_bytes)
    snap: Metadata[Snapshot] = Metadata.from_bytes(snap_bytes)
    root.signed.verify_delegate("snapshot", CANONICAL.serialize(snap.signed), snap.signatures)
    targets_meta = snap.signed.meta["targets.json"]
    targets_bytes = get(device_key(device_id, "targets", targets_meta.version))
    targets_meta.verify_length_and_hashes(targets_bytes)
    targets: Metadata[Targets] = Metadata.from_bytes(targets_bytes)
    root.signed.verify_delegate("targets", CANONICAL.serialize(targets.signed), targets.signatures)
    path = f"devices/{device_id}.json"
    return ts.signed.version, targets.signed.targets.get(path)


class DirectorFetcher(FetcherInterface):
    """A device's fetcher for its director chain: ``.../director/devices/<id>/<N>.root.json``
    is read from the shared ``.../director/metadata/<N>.root.json`` (one root chain for every device);
    every other URL goes to ``inner`` unchanged. Any static server or CDN serves the layout as it is."""

    def __init__(self, inner: FetcherInterface) -> None:
        self.inner = inner

    def _fetch(self, url: str) -> Iterator[bytes]:
        found = _ROOT_URL.match(url)
        if found:
            url = f"{found['base']}director/metadata/{found['file']}"
        return self.inner._fetch(url)
