"""One delegated role per release (decision 1203): names, paths, and the check that binds them.

The layout this module serves (decision 1203; what ``otactl init`` makes and ``otactl repo migrate-releases``
adds to an older repository)::

    targets (offline)
      ├── releases          CI + k release managers, threshold 1 + k: the *approval rule* (anchor);
      │                     in an old repository it also still lists the releases published before
      ├── release-index     signed by the CI key alone; lists no target, only delegations:
      │     ├── release-t9-engine-2.1.0   terminating, paths firmware/t9-engine/2.1.0/*,
      │     ├── release-t9-engine-2.2.0   config/t9-engine/2.2.0/*, releases/t9-engine/2.2.0.json;
      │     ...                           keys and threshold exactly the anchor's
      ├── rollouts, devices, withdrawals

Each release is its own version-1 role, signed by CI at build and by k managers at approval: it never
conflicts with another staged release. Publishing adds its delegation to ``release-index``, which an
online key signs, so the index only chooses *which* approved releases are visible. ngclient does not
make a delegator's choice of keys safe: it verifies a delegated role with whatever keys and threshold
the delegator wrote, and does not recompute a key's id from its key material. So the device checks
every index it trusts against the anchor that the offline ``targets`` key signed (:func:`check_index`):
a delegation whose keys, key material, threshold, termination or paths differ, or an index that lists
a target of its own, is refused. An online key then cannot make an unapproved release installable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import DelegatedRole, Metadata, Targets
from tuf.api.serialization import DeserializationError

from otactl.errors import UsageError, VerificationError
from otactl.repo import layout

ANCHOR = "releases"
INDEX = "release-index"
PREFIX = "release-"
INDEX_PATHS = tuple(layout.DELEGATION_PATHS[INDEX])  # one `*` per segment, like `releases`
# A release's role never changes once published: it lives as long as the release is supported in the field.
# Freshness comes from snapshot and timestamp (they pin each role's version and hash); revocation from
# ``withdrawals``. ``otactl repo status`` reports a role near its end, for the managers to sign again.
EXPIRY_DAYS = 5 * 365


def is_release_role(name: str) -> bool:
    """One release's delegated role (not the index, not the anchor)."""
    return name.startswith(PREFIX) and name != INDEX


class UnapprovedReleaseError(RepositoryError):
    """The release index that the TUF client verified could make an unapproved release installable."""


@dataclass(frozen=True)
class ReleaseRole:
    """The delegated role of one release of one model."""

    model: str
    version: str

    def __post_init__(self) -> None:
        layout.check_name("model", self.model)
        layout.check_name("version", self.version)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.model}-{self.version}"

    @property
    def paths(self) -> list[str]:
        """Exactly this release's images, configurations and descriptor (one `*` per segment)."""
        return [f"firmware/{self.model}/{self.version}/*", f"config/{self.model}/{self.version}/*",
                layout.release_path(self.model, self.version)]

    def delegation(self, anchor: DelegatedRole) -> DelegatedRole:
        """The index's entry for this release: the anchor's keys and threshold, terminating."""
        return DelegatedRole(self.name, list(anchor.keyids), anchor.threshold, True, self.paths)


def release_of(role: DelegatedRole) -> ReleaseRole:
    """Which release a delegation is for, read from its paths (the name must agree)."""
    paths = role.paths or []
    head = paths[-1] if paths else ""
    parts = head.removesuffix(".json").split("/")
    if len(parts) != 3 or parts[0] != "releases" or not head.endswith(".json"):
        raise VerificationError(f"delegation {role.name!r}: its paths {paths} are not one release's")
    try:
        release = ReleaseRole(parts[1], parts[2])
    except UsageError as exc:  # a name that is no path segment
        raise VerificationError(f"delegation {role.name!r}: its paths {paths} are not one release's") from exc
    if paths != release.paths or role.name != release.name:
        raise VerificationError(f"delegation {role.name!r}: its paths {paths} are not exactly those of "
                                f"{release.name!r} ({release.paths})")
    return release


def check_index(targets: Targets, index: Targets) -> list[ReleaseRole]:
    """Refuse an index (signed by an online key) that could make anything but an approved release
    installable; return the releases it makes visible.

    ``targets`` is the verified top-level targets metadata (offline key): its delegation to ``releases``
    is the approval rule. Every release the index delegates to must be verified with exactly those keys
    (same ids, same key material) and threshold, terminate the search, and cover only its own paths;
    the index itself lists no target and delegates to nothing else.
    """
    if targets.delegations is None or not targets.delegations.roles or ANCHOR not in targets.delegations.roles:
        raise VerificationError(f"the targets metadata has no {ANCHOR!r} delegation (the approval rule)")
    anchor = targets.delegations.roles[ANCHOR]
    anchor_keys = {k: targets.delegations.keys[k] for k in anchor.keyids}
    if index.targets:
        raise VerificationError(f"{INDEX}: lists targets of its own ({', '.join(sorted(index.targets)[:3])}); "
                                "only delegations to approved releases may be there")
    if index.delegations is None:
        return []
    if index.delegations.succinct_roles is not None:
        raise VerificationError(f"{INDEX}: delegates to hash bins; only to releases")
    out = []
    for name, role in (index.delegations.roles or {}).items():
        release = release_of(role)
        if set(role.keyids) != set(anchor.keyids) or len(role.keyids) != len(anchor.keyids):
            raise VerificationError(f"{INDEX}: {name!r} is delegated to other keys than the approval rule's")
        for keyid in role.keyids:
            key = index.delegations.keys.get(keyid)
            if key is None or (key.keytype, key.scheme, key.keyval) != (
                    anchor_keys[keyid].keytype, anchor_keys[keyid].scheme, anchor_keys[keyid].keyval):
                raise VerificationError(f"{INDEX}: {name!r}: key {keyid[:12]} is not the approval rule's key")
        if role.threshold != anchor.threshold:
            raise VerificationError(f"{INDEX}: {name!r} needs {role.threshold} signatures, the approval rule "
                                    f"{anchor.threshold}")
        if not role.terminating:
            raise VerificationError(f"{INDEX}: {name!r} does not terminate the search")
        out.append(release)
    return out


def check_trusted(metadata_dir: Path) -> list[ReleaseRole]:
    """:func:`check_index` on what a device's ngclient verified and keeps in ``metadata_dir`` (after
    ``refresh`` and a lookup through the index); no index there (an old layout, or none loaded): ``[]``.
    ``otactl.repo.client.make_updater`` runs it after every lookup of a release's target."""
    index_file = metadata_dir / f"{INDEX}.json"
    if not index_file.exists():
        return []
    try:
        targets: Metadata[Targets] = Metadata.from_bytes((metadata_dir / "targets.json").read_bytes())
        index: Metadata[Targets] = Metadata.from_bytes(index_file.read_bytes())
    except (OSError, DeserializationError) as exc:
        raise VerificationError(f"{metadata_dir}: cannot read the trusted targets or {INDEX} metadata ({exc})") \
            from exc
    return check_index(targets.signed, index.signed)
