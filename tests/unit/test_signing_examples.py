"""Every trust-configuration example in signing/ loads, and its keys are what it says they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from otactl.keys.keyfile import public_key
from otactl.workspace import parse_trust
from otactl.yamlio import load_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "signing").glob("*.yaml"))


def test_the_examples_are_listed_in_the_readme() -> None:
    assert len(EXAMPLES) >= 3
    readme = (ROOT / "signing" / "README.md").read_text()
    assert all(p.name in readme for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads_with_consistent_keys_and_roles(path: Path) -> None:
    trust = parse_trust(load_yaml(path))
    for key in trust.keys.values():
        assert public_key(key.public).keyid == key.keyid, key.name  # the keyid is the public key's
        assert "private" not in key.uri and not key.uri.endswith(".pem")
    releases = trust.role("releases")
    assert set(trust.ci_keys) | set(trust.release_managers) == set(releases.keys)
    assert releases.threshold > len(trust.ci_keys)  # at least one release manager must approve
    assert not set(trust.release_managers) & set(trust.role("rollouts").keys)  # never online
    withdrawals = trust.role("withdrawals")  # the release managers' own threshold (decision 0502)
    assert set(withdrawals.keys) == set(trust.release_managers)
    assert withdrawals.threshold == releases.threshold - len(trust.ci_keys)
    online = {k for role in ("snapshot", "timestamp", "rollouts", "devices") for k in trust.role(role).keys}
    assert not set(trust.entitlement_keys) & online  # an entitlement signer is never online (decision 0406)
