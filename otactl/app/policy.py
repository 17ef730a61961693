"""Publish a model's rollout policy (``rollouts/<model>.json``), signed by the online rollouts key."""

from __future__ import annotations

import hashlib
from typing import Any

from otactl.app.context import Context
from otactl.release.bundle import canonical
from otactl.repo import layout
from otactl.repo.repository import Repository

POLICY_SCHEMA = "otactl/rollout-policy/1"


def policy_bytes(ctx: Context, repo: Repository, model: str) -> bytes | None:
    """The model's published rollout policy, checked against its signed length and hashes (None: none)."""
    path = layout.rollout_path(model)
    found = repo.find_target(path)
    if found is None:
        return None
    _, tf = found
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    tf.verify_length_and_hashes(data)
    return data


def current_policy(ctx: Context, repo: Repository, model: str) -> dict[str, Any] | None:
    import json

    data = policy_bytes(ctx, repo, model)
    if data is None:
        return None
    doc: dict[str, Any] = json.loads(data)
    return doc


def _ring_json(ring: dict[str, Any]) -> dict[str, Any]:
    """Canonical JSON has no floats: a percentage is written as a decimal string ("2.5")."""
    selector = dict(ring.get("selector", {}))
    if isinstance(selector.get("percent"), float | int):
        selector["percent"] = repr(float(selector["percent"])).removesuffix(".0")  # exact round-trip
    return {**ring, "selector": selector}


def publish_policy(ctx: Context, policy: dict[str, Any], repo: Repository | None = None) -> int:
    """Publish ``policy`` (docs/formats.md rollout-policy/1); returns the policy_version published.

    ``policy_version`` always increases. A document that names its version (the controller's,
    computed once by ``otactl.rollout.decide``) is published at exactly that version, and not at
    all when the repository already has it or a later one (so publishing again after a crash is
    harmless); one without gets one more than the published one.
    """
    repo = repo or ctx.repository()
    model = str(policy["model"])
    layout.check_name("model", model)
    previous = current_policy(ctx, repo, model)
    published = int((previous or {}).get("policy_version", 0))
    doc = dict(policy)
    doc["schema"] = POLICY_SCHEMA
    if doc.get("policy_version") is not None:
        if int(doc["policy_version"]) <= published:
            return published
    else:
        doc["policy_version"] = published + 1
    doc["rings"] = [_ring_json(r) for r in doc.get("rings", [])]
    data = canonical(doc)
    sha = hashlib.sha256(data).hexdigest()
    path = layout.rollout_path(model)
    ctx.store.put(layout.target_key(path, sha), data)
    repo.add_target("rollouts", path, len(data), sha,
                    {"model": model, "rollout_id": str(doc.get("rollout_id", ""))})
    repo.publish()
    return int(doc["policy_version"])
