"""The bin-count rule (docs/decisions/0401): about 256 devices per bin, a power of two, 1 to 65536 bins."""

from __future__ import annotations

import pytest

from otactl.fleet.records import recommended_bin_bits


@pytest.mark.parametrize(
    ("fleet", "bits"),
    [
        pytest.param(0, 0, id="empty"),
        pytest.param(256, 0, id="one-bin"),
        pytest.param(1_000, 2, id="1k"),
        pytest.param(10_000, 5, id="10k"),
        pytest.param(100_000, 9, id="100k"),
        pytest.param(1_000_000, 12, id="1M"),
        pytest.param(10_000_000, 15, id="10M"),
        pytest.param(10**9, 16, id="capped-at-init's-maximum"),
    ],
)
def test_recommended_bin_bits(fleet: int, bits: int) -> None:
    assert recommended_bin_bits(fleet) == bits


@pytest.mark.parametrize("fleet", [1_000, 5_000, 37_000, 100_000, 640_000, 1_000_000, 3_000_000])
def test_devices_per_bin_stays_within_a_factor_of_two_of_256(fleet: int) -> None:
    per_bin = fleet / 2 ** recommended_bin_bits(fleet)
    assert 256 / 2**0.5 <= per_bin <= 256 * 2**0.5
