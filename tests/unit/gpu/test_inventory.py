"""Every part of a node plans the same slots from its settings."""

from __future__ import annotations

from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.settings import Settings


def test_every_part_plans_the_same_slots_from_settings() -> None:
    settings = Settings.from_env(
        {
            "HN_SIMULATE_GPUS": "4",
            "HN_GPUS_PER_WORKER": "2",
            "HN_CPU_SLOTS": "1",
            "HN_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    slots = plan_node_slots(settings)  # Redis down: the simulated GPUs just read idle
    assert [(s.id, len(s.gpus), s.queue) for s in slots] == [(0, 2, "hn-gpu2"), (1, 2, "hn-gpu2"), (2, 0, "hn-cpu")]
