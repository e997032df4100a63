"""Simulated GPUs: UUIDs stable per node and different between nodes; MIG instances as GPUs of their own."""

from __future__ import annotations

import pytest

from hypernode_host.core.slots import plan_slots, queue_for
from hypernode_host.errors import ConfigError
from hypernode_host.gpu.simulated import simulated_gpus


def test_simulated_uuids_are_stable_per_node_and_differ_between_nodes() -> None:
    here = [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert here == [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert not set(here) & {g.uuid for g in simulated_gpus("2", seed="rig-b")}
    with pytest.raises(ConfigError, match="more than the 64 simulated at most"):
        simulated_gpus("65")


def test_a_simulated_gpu_in_mig_mode_is_its_instances_one_slot_each() -> None:
    gpus = simulated_gpus("1xRTX4090:24576,1xA100:81920:mig=3g.40gb+2g.20gb", seed="rig")
    parent = gpus[1]

    assert parent.mig_enabled and parent.parent_uuid is None
    instances = gpus[2:]
    assert [(g.index, g.name, g.memory_total_mb, g.parent_uuid) for g in instances] == [
        (1, "A100 MIG 3g.40gb", 40960, parent.uuid),
        (1, "A100 MIG 2g.20gb", 20480, parent.uuid),
    ]
    assert all(g.uuid.startswith("MIG-") for g in instances) and len({g.uuid for g in instances}) == 2
    assert [g.uuid for g in simulated_gpus("1xA100:81920:mig=3g.40gb+2g.20gb", seed="rig")[1:]] != [
        g.uuid for g in instances
    ]  # another index: other UUIDs
    slots = plan_slots(gpus, 0)
    assert [s.gpu_uuids for s in slots] == [(gpus[0].uuid,), (instances[0].uuid,), (instances[1].uuid,)]
    assert queue_for(1, 30000, slots) == "hn-gpu1-40960mib"  # only the 3g.40gb instance holds it


def test_mig_specs_that_cannot_exist_are_refused() -> None:
    for spec in (
        "1xA100:40960:mig=3g.40gb+2g.20gb",
        "1xA100:81920:mig=" + "+".join(["1g.10gb"] * 8),
        "1xA100:81920:mig=3g",
    ):
        with pytest.raises(ConfigError, match="HN_SIMULATE_GPUS"):
            simulated_gpus(spec)
