"""A device's state directory: what survives a reboot.

    DIR/
      device.json      identity: device id, model, hardware revision (fixed at provisioning)
      device.key       ed25519 signing key, hex seed, mode 0600 (see docs/decisions/0301-*)
      root.json        the trust anchor the device shipped with (used on first start only)
      tuf/             ngclient's trusted metadata and its cache of small targets
      slot-a/ slot-b/  A/B slots: firmware.bin, config.json, release.json, manifest.json (last)
      active           the active pointer {"slot": "a", "trial": false}, written atomically
      state.json       the security_version floor, releases that failed here, reported notices
      reports.json     next report seq, the outbox of signed reports not yet accepted, counters

Every file is replaced atomically (write, fsync, rename). A slot's manifest is written after its
files, so a slot without a manifest is empty. A pointer left in ``trial`` means the device died
while trying a new slot: the next start reverts to the previous slot (what a bootloader does).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing

from otactl.agent.model import SlotManifest
from otactl.errors import KeyAccessError, UsageError, VerificationError
from otactl.fsutil import atomic_write
from otactl.repo.layout import check_name

IDENTITY_SCHEMA = "otactl/agent-device/1"
SLOTS = ("a", "b")
FIRMWARE_FILE = "firmware.bin"
CONFIG_FILE = "config.json"
DESCRIPTOR_FILE = "release.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Identity:
    device_id: str
    model: str
    hardware_revision: str

    def __post_init__(self) -> None:
        for kind in ("device_id", "model", "hardware_revision"):
            check_name(kind.replace("_", " "), getattr(self, kind))


@dataclass(frozen=True)
class ActivePointer:
    slot: str | None  # None: factory-empty, nothing installed
    trial: bool = False  # trying ``slot``; ``previous`` is where a failed boot goes back to
    previous: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "trial": self.trial, "previous": self.previous}


@dataclass
class AgentState:
    security_floor: int = 0
    failed_here: dict[str, str] = field(default_factory=dict)  # version -> why its boot failed
    notices: list[str] = field(default_factory=list)  # report keys already sent (offered, refusals)
    record: dict[str, Any] | None = None  # the last verified device record (variant, region, tags)


@dataclass
class ReportLog:
    next_seq: int = 1
    outbox: list[dict[str, str]] = field(default_factory=list)  # envelopes, oldest first
    accepted: int = 0
    refused: int = 0
    dropped: int = 0


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class DeviceState:
    """The files of one device's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity = self._read_identity()

    # ------------------------------------------------------------------ provisioning
    @classmethod
    def provision(cls, root: Path, identity: Identity, trust_anchor: bytes,
                  key: nacl.signing.SigningKey | None = None) -> DeviceState:
        """Create a factory-fresh device: identity, a new (or given) key, the trust anchor."""
        if (root / "device.json").exists():
            raise UsageError(f"{root}: already holds a provisioned device; refusing to overwrite it")
        root.mkdir(parents=True, exist_ok=True)
        key = key or nacl.signing.SigningKey.generate()
        atomic_write(root / "device.key", bytes(key).hex().encode() + b"\n", mode=0o600)
        atomic_write(root / "root.json", trust_anchor)
        atomic_write(root / "device.json", _json({"schema": IDENTITY_SCHEMA, "device_id": identity.device_id,
                                                  "model": identity.model,
                                                  "hardware_revision": identity.hardware_revision}))
        for slot in SLOTS:
            (root / f"slot-{slot}").mkdir(exist_ok=True)
        return cls(root)

    def _read_identity(self) -> Identity:
        path = self.root / "device.json"
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise UsageError(f"{self.root}: not a device directory (no device.json)",
                             hint="create one with `otactl agent provision`") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read the device identity ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != IDENTITY_SCHEMA:
            raise UsageError(f"{path}: not a {IDENTITY_SCHEMA} document")
        try:
            return Identity(str(doc["device_id"]), str(doc["model"]), str(doc["hardware_revision"]))
        except KeyError as exc:
            raise UsageError(f"{path}: {exc.args[0]}: missing") from None

    def signing_key(self) -> nacl.signing.SigningKey:
        path = self.root / "device.key"
        try:
            if path.stat().st_mode & 0o077:
                raise KeyAccessError(f"{path}: readable by others; the device key must be mode 0600")
            return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))
        except FileNotFoundError:
            raise KeyAccessError(f"{path}: the device key is missing") from None
        except (OSError, ValueError) as exc:
            raise KeyAccessError(f"{path}: cannot read the device key ({type(exc).__name__})") from None

    def trust_anchor(self) -> bytes:
        try:
            return (self.root / "root.json").read_bytes()
        except OSError as exc:
            raise UsageError(f"{self.root / 'root.json'}: cannot read the trust anchor ({exc.strerror})") from None

    @property
    def tuf_dir(self) -> Path:
        return self.root / "tuf"

    # ------------------------------------------------------------------ slots
    def slot_dir(self, slot: str) -> Path:
        return self.root / f"slot-{slot}"

    def active(self) -> ActivePointer:
        path = self.root / "active"
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return ActivePointer(None)
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: corrupt active pointer ({exc})") from None
        slot, previous = doc.get("slot"), doc.get("previous")
        if slot not in (*SLOTS, None) or previous not in (*SLOTS, None):
            raise VerificationError(f"{path}: corrupt active pointer")
        return ActivePointer(slot, bool(doc.get("trial")), previous)

    def set_active(self, pointer: ActivePointer) -> None:
        atomic_write(self.root / "active", _json(pointer.to_json()))

    def manifest(self, slot: str | None) -> SlotManifest | None:
        if slot is None:
            return None
        path = self.slot_dir(slot) / MANIFEST_FILE
        try:
            return SlotManifest.from_bytes(path.read_bytes(), str(path))
        except FileNotFoundError:
            return None
        except VerificationError:
            return None  # a damaged slot is an empty slot: it is never booted

    def clear_slot(self, slot: str) -> Path:
        path = self.slot_dir(slot)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def write_manifest(self, slot: str, manifest: SlotManifest) -> None:
        atomic_write(self.slot_dir(slot) / MANIFEST_FILE, _json(manifest.to_json()))

    # ------------------------------------------------------------------ agent state, reports
    def load_state(self) -> AgentState:
        doc = self._read_json("state.json")
        if doc is None:
            return AgentState()
        return AgentState(int(doc.get("security_floor", 0)), dict(doc.get("failed_here", {})),
                          list(doc.get("notices", [])), doc.get("record"))

    def save_state(self, state: AgentState) -> None:
        atomic_write(self.root / "state.json", _json(vars(state)))

    def load_reports(self) -> ReportLog:
        doc = self._read_json("reports.json")
        if doc is None:
            return ReportLog()
        return ReportLog(int(doc["next_seq"]), list(doc.get("outbox", [])), int(doc.get("accepted", 0)),
                         int(doc.get("refused", 0)), int(doc.get("dropped", 0)))

    def save_reports(self, log: ReportLog) -> None:
        atomic_write(self.root / "reports.json", _json(vars(log)))

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: corrupt ({exc})") from None
        if not isinstance(doc, dict):
            raise VerificationError(f"{path}: corrupt (not an object)")
        return doc


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"
