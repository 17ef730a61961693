"""Release managers' signed statements: what a release manager signs on their own machine for CI to act on.

A ring approval and a reinstatement are audited actions of a release manager, but the audit log, the
rollout state and the rollout policy are written in CI (the online rollouts key), which holds no release
manager's key (decision 1105). So the release manager's signer workspace signs a *statement* and puts
it in the store; CI takes it in, checks it, and records it through ``journal.commit``:

    requests/<model>/approve/<rollout_id>/<ring>/<name>.json   one ring approval per release manager
    requests/<model>/reinstate/<version>.json                  the pending reinstatement of a release

A statement (``otactl/rm-statement/1``) holds its action, the payload (exactly the fields
``audit.STATEMENT_FIELDS`` names), the release manager's name and keyid, and their ed25519 signature
over the payload's canonical JSON. CI verifies the signature with the key its trust configuration
lists for a release manager, and the payload against the current state (a statement made for another
rollout, ring, plan, evidence or policy version is stale). The audit entry carries the payload, the
name, the keyid and the signature, so ``otactl audit verify`` checks the release manager's signature
whoever signed the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from securesystemslib.signer import Signature, Signer

from otactl.app.context import Context
from otactl.audit.log import STATEMENT_FIELDS
from otactl.errors import VerificationError
from otactl.keys.keyfile import public_key
from otactl.release.bundle import canonical

SCHEMA = "otactl/rm-statement/1"


def approval_key(model: str, rollout_id: str, ring: str, name: str) -> str:
    return f"{approval_prefix(model, rollout_id, ring)}{name}.json"


def approval_prefix(model: str, rollout_id: str, ring: str) -> str:
    return f"requests/{model}/approve/{rollout_id}/{ring}/"


def reinstate_key(model: str, version: str) -> str:
    return f"requests/{model}/reinstate/{version}.json"


@dataclass(frozen=True)
class Statement:
    action: str  # a key of audit.STATEMENT_FIELDS
    payload: dict[str, Any]
    release_manager: str  # the signer's name (as the signing side's metadata names the key)
    keyid: str
    signature: str

    def to_bytes(self) -> bytes:
        return json.dumps({"schema": SCHEMA, "action": self.action, "payload": self.payload,
                           "release_manager": self.release_manager, "keyid": self.keyid,
                           "signature": self.signature}, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Statement:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                raise ValueError(f"not an {SCHEMA} document")
            action, payload = str(doc["action"]), doc["payload"]
            if action not in STATEMENT_FIELDS:
                raise ValueError(f"unknown action {action!r}")
            if not isinstance(payload, dict) or sorted(payload) != sorted(STATEMENT_FIELDS[action]):
                raise ValueError(f"payload: expected exactly {', '.join(STATEMENT_FIELDS[action])}")
            return cls(action, payload, str(doc["release_manager"]), str(doc["keyid"]), str(doc["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"{where}: malformed release manager's statement ({exc})") from None

    def audit_details(self, name: str) -> dict[str, Any]:
        """The payload and the release manager's signature, as the audit entry carries them."""
        return {**self.payload, "release_manager": name, "signer_keyid": self.keyid, "signature": self.signature}


def sign(action: str, payload: dict[str, Any], name: str, signer: Signer) -> Statement:
    fields = {f: payload[f] for f in STATEMENT_FIELDS[action]}
    sig = signer.sign(canonical(fields))
    return Statement(action, fields, name, signer.public_key.keyid, sig.signature)


def verify(ctx: Context, st: Statement, where: str) -> str:
    """The release manager (a name in ``ctx.trust``) whose key signed ``st``; VerificationError if none did."""
    entry = ctx.trust.key_by_id(st.keyid)
    if entry is None or entry.name not in ctx.trust.release_managers:
        raise VerificationError(f"{where}: signed by key {st.keyid[:16]} (says {st.release_manager!r}), which is not "
                                f"a release manager's key in {ctx.trust.path} (release managers: "
                                f"{', '.join(ctx.trust.release_managers) or 'none'}); refusing it")
    try:
        public_key(entry.public).verify_signature(Signature(st.keyid, st.signature), canonical(st.payload))
    except Exception:  # noqa: BLE001 - securesystemslib raises several error types
        raise VerificationError(f"{where}: {entry.name}'s signature does not verify (the statement was altered); "
                                "refusing it") from None
    return entry.name


def stale_fields(st: Statement, current: dict[str, Any]) -> list[str]:
    """``field: signed X, now Y`` for each payload field that is not the current state's."""
    return [f"{f}: signed {st.payload.get(f)!r:.40}, now {current[f]!r:.40}"
            for f in STATEMENT_FIELDS[st.action] if st.payload.get(f) != current[f]]
