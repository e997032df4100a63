"""Simulated GPUs: UUIDs stable per node and different between nodes."""

from __future__ import annotations

import pytest

from hypernode_host.errors import ConfigError
from hypernode_host.gpu.simulated import simulated_gpus


def test_simulated_uuids_are_stable_per_node_and_differ_between_nodes() -> None:
    here = [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert here == [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert not set(here) & {g.uuid for g in simulated_gpus("2", seed="rig-b")}
    with pytest.raises(ConfigError, match="more than the 64 simulated at most"):
        simulated_gpus("65")
