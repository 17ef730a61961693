"""The agent's entitlement decision, as a pure function (decision 0406): which variant and features
a device acts on, given its signed record, the repository's entitlement signers (None while the
repository is not migrated) and what the device accepted before.

- No signers and none ever seen: a legacy repository; the record's own variant, as before 0406.
- Otherwise the record must carry an entitlement that verifies (threshold of the signers over the
  batch, the Merkle path, this device's id and key) and is not older than the one accepted before
  (a replay would downgrade or revoke). The variant and features come from the statement only.
- A record that fails keeps the device on what it last accepted (variant, features, configuration)
  and reports the problem; a device that never accepted one has nothing to fall back to: an error.

What the device remembers lives in its ``state.json`` ``record`` (``Remembered.to_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from otactl.fleet.entitlements import Accepted, EntitlementError, Signers, check_fresh
from otactl.fleet.records import DeviceRecord


@dataclass(frozen=True)
class Remembered:
    """What a device keeps between checks: the variant and features it runs, the newest entitlement
    it accepted, and whether it has seen the repository require entitlements (never unset)."""

    variant: str
    features: tuple[str, ...]
    accepted: Accepted | None
    required: bool

    @classmethod
    def from_state(cls, rec: dict[str, Any] | None) -> Remembered | None:
        if not rec or "variant" not in rec:
            return None
        version, digest = rec.get("entitlement_version"), rec.get("entitlement_digest")
        accepted = Accepted(version, digest) if isinstance(version, int) and isinstance(digest, str) else None
        return cls(str(rec["variant"]), tuple(rec.get("features", ())), accepted,
                   bool(rec.get("entitlements_required")))

    def to_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": list(self.features), "entitlements_required": self.required}
        if self.accepted is not None:
            out.update(entitlement_version=self.accepted.version, entitlement_digest=self.accepted.digest)
        return out


@dataclass(frozen=True)
class Verdict:
    record: DeviceRecord  # what the device acts on: variant and features as verified (or kept)
    remembered: Remembered
    problem: str | None  # the entitlement failure the device reports, if any


def judge(record: DeviceRecord, signers: Signers | None, last: Remembered | None, *, public_key: str) -> Verdict:
    """Raises :class:`EntitlementError` when the record fails and there is nothing to fall back to."""
    required = signers is not None or (last is not None and last.required)
    if not required:
        return Verdict(record, Remembered(record.variant, record.features, None, False), None)
    try:
        problem = _problem(record, signers, last, public_key)
    except EntitlementError as exc:
        problem = str(exc)
    if problem is None:
        assert record.entitlement is not None
        st = record.entitlement.statement
        return Verdict(record, Remembered(st.variant, st.features, Accepted(st.version, st.digest()), True), None)
    where = f"devices/{record.device_id}.json"
    if last is None:
        raise EntitlementError(f"{where}: entitlement refused ({problem}); this device has no verified "
                               "entitlement to keep, so it installs nothing")
    kept = replace(record, variant=last.variant, features=last.features, entitlement=None)
    return Verdict(kept, replace(last, required=True),
                   f"{where}: entitlement refused ({problem}); keeping {last.variant}")


def _problem(record: DeviceRecord, signers: Signers | None, last: Remembered | None, public_key: str) -> str | None:
    if signers is None:
        return "the repository no longer lists its entitlement signers (entitlements/signers.json)"
    if record.entitlement is None:
        return "the record carries no entitlement, and this repository requires one"
    st = signers.verify(record.entitlement, device_id=record.device_id, public_key=public_key)
    return check_fresh(st, None if last is None else last.accepted)
