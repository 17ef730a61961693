"""The simulated fleet: device identities, records and keys, drawn deterministically from a scenario.

Composition weights are allocated exactly (largest remainder), so weights that add up to the
device count are the counts. Keys are derived from the scenario seed and the device id, so a
scenario gives the same fleet every run - acceptable for simulated devices only.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import nacl.signing

from otactl.fleet.records import DeviceRecord
from otactl.sim.scenario import Fleet, Scenario


@dataclass(frozen=True)
class SimDevice:
    record: DeviceRecord
    key_seed: bytes = field(repr=False)  # a device key: never in a repr, a log or a traceback

    @property
    def device_id(self) -> str:
        return self.record.device_id

    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.key_seed)


def allocate(total: int, weights: tuple[tuple[str, float], ...]) -> list[str]:
    """``total`` labels in the given proportions, exactly (largest remainder, ties by order)."""
    whole = sum(w for _, w in weights)
    shares = [(name, total * w / whole) for name, w in weights]
    counts = {name: int(share) for name, share in shares}
    left = total - sum(counts.values())
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i][1] - int(shares[i][1])), i))
    for i in by_remainder[:left]:
        counts[shares[i][0]] += 1
    return [name for name, _ in weights for _ in range(counts[name])]


def generate_fleet(scenario: Scenario) -> list[SimDevice]:
    fleet: Fleet = scenario.fleet
    rng = random.Random(f"{scenario.seed}:fleet")
    n = fleet.devices
    columns = []
    for weights in (fleet.hardware_revisions, fleet.variants, fleet.regions):
        labels = allocate(n, weights)
        rng.shuffle(labels)
        columns.append(labels)
    lab = set(rng.sample(range(n), fleet.lab_devices))
    width = max(4, len(str(n - 1)))
    devices = []
    for i in range(n):
        device_id = f"{fleet.id_prefix}-{i:0{width}d}"
        seed = hashlib.sha256(f"otactl-sim:{scenario.seed}:{device_id}".encode()).digest()
        public = bytes(nacl.signing.SigningKey(seed).verify_key).hex()
        record = DeviceRecord(device_id, fleet.model, columns[0][i], columns[1][i], columns[2][i],
                              ("lab",) if i in lab else (), public)
        devices.append(SimDevice(record, seed))
    return devices
