"""Role names, delegation path patterns, target paths and otactl's custom target metadata.

Custom fields inside TUF metadata are read and written here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import TargetFile

from otactl.errors import UsageError

TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
DELEGATED = ("releases", "rollouts", "devices", "withdrawals", "release-index")
ONLINE_ROLES = ("snapshot", "timestamp", "rollouts", "devices", "release-index")  # the index: CI's key
OFFLINE_ROLES = ("root", "targets", "releases", "withdrawals")
BIN_PREFIX = "devices"

# One `*` per path segment: portable across TUF clients in every language.
DELEGATION_PATHS: dict[str, list[str]] = {
    "releases": ["firmware/*/*/*", "config/*/*/*", "releases/*/*"],
    "rollouts": ["rollouts/*"],
    "devices": ["devices/*"],
    "withdrawals": ["withdrawals/*/*"],  # signed by the release managers' threshold (decision 0502)
    # CI's key; delegates each published release to its own role, checked by devices (decision 1203)
    "release-index": ["firmware/*/*/*", "config/*/*/*", "releases/*/*"],
}

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(rf"^{NAME_PATTERN}\Z")


def check_name(kind: str, value: str) -> str:
    """Model names, versions, variants, device ids and file names become path segments."""
    if not _NAME.match(value) or value in (".", ".."):
        raise UsageError(f"{kind} {value!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return value


def firmware_path(model: str, version: str, filename: str) -> str:
    return f"firmware/{model}/{version}/{filename}"


def config_path(model: str, version: str, variant: str) -> str:
    return f"config/{model}/{version}/{variant}.json"


def release_path(model: str, version: str) -> str:
    return f"releases/{model}/{version}.json"


def rollout_path(model: str) -> str:
    return f"rollouts/{model}.json"


def withdrawal_path(model: str, version: str) -> str:
    """A release's signed withdrawal: listed by the ``withdrawals`` role only once it is withdrawn."""
    return f"withdrawals/{model}/{version}.json"


def device_path(device_id: str) -> str:
    return f"devices/{device_id}.json"


def metadata_key(role: str, version: int | None) -> str:
    return f"metadata/{role}.json" if version is None else f"metadata/{version}.{role}.json"


def target_key(path: str, sha256: str) -> str:
    """Where a consistent-snapshot client fetches a target: hash-prefixed file name."""
    head, _, name = path.rpartition("/")
    return f"targets/{head}/{sha256}.{name}" if head else f"targets/{sha256}.{name}"


def set_custom(target: TargetFile, custom: dict[str, Any]) -> None:
    target.unrecognized_fields["custom"] = {"otactl": custom}


def get_custom(target: TargetFile) -> dict[str, Any]:
    custom = target.unrecognized_fields.get("custom", {})
    value = custom.get("otactl", {}) if isinstance(custom, dict) else {}
    return value if isinstance(value, dict) else {}


KEY_NAME_FIELD = "x-otactl-keyname"  # like tuf-on-ci's x-tuf-on-ci-keyowner: who holds a key, signed


def name_key(key: Key, name: str) -> Key:
    """Record the trust file's name of ``key`` inside the signed metadata (root, delegations), so a
    release manager's machine, which has no trust file, can say who signed (decision 1105)."""
    key.unrecognized_fields[KEY_NAME_FIELD] = name
    return key


def key_name(key: Key) -> str | None:
    value = key.unrecognized_fields.get(KEY_NAME_FIELD)
    return value if isinstance(value, str) and _NAME.match(value) else None
