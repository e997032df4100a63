"""What the bridge tells the backend about the node: heartbeat stats and GPU entries, from plain records."""

from __future__ import annotations

import dataclasses

from hypernode_host.bridge.stats import heartbeat_stats, wire_gpu
from hypernode_host.core.slots import plan_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.state.records import Registration

GPUS = simulated_gpus("2xRTX4090:24576", seed="rig")
SLOTS = plan_slots(GPUS, 1)


def test_the_stats_count_jobs_free_slots_and_say_which_slots_take_no_jobs() -> None:
    registrations = [
        Registration("rig", SLOTS[0], job="j-1", job_gpus=(GPUS[0].uuid,)),  # busy
        Registration("rig", SLOTS[1], healthy=False, health="GPU-x: marked lost: test"),  # sick
        Registration("rig", SLOTS[2]),  # idle: the only free slot
    ]

    stats = heartbeat_stats({"completed": 7, "failed": 2}, 3, 1, registrations, GPUS)

    assert (stats.jobs_completed, stats.jobs_failed, stats.active_jobs, stats.queued_jobs) == (7, 2, 1, 3)
    assert stats.free_slots == 1 and stats.total_uptime == 0  # the uptime is set when the beat is sent
    assert stats.unhealthy_slots == ["rig slot 1 (GPU 1 RTX4090): GPU-x: marked lost: test"]
    assert [g.uuid for g in stats.gpus] == [g.uuid for g in GPUS]
    assert heartbeat_stats({}, 0, 0, [], []).model_dump() | {"gpus": []} == {
        "jobs_completed": 0,
        "jobs_failed": 0,
        "total_uptime": 0,
        "active_jobs": 0,
        "gpus": [],
        "queued_jobs": 0,
        "free_slots": 0,
        "unhealthy_slots": [],
        "uptime_24h": None,
        "uptime_7d": None,
        "uptime_30d": None,
    }


def test_a_gpu_on_the_wire_has_upstreams_keys_ours_its_sensors_and_its_health() -> None:
    gpu = dataclasses.replace(GPUS[0], memory_free_mb=20000, utilization_pct=37, healthy=False, health="bad")

    entry = wire_gpu(gpu).model_dump()

    assert (entry["model"], entry["name"], entry["vram_total"], entry["vram_free"]) == (
        "RTX4090",
        "RTX4090",
        "24576 MiB",
        "20000 MiB",
    )
    assert (entry["memory_total_mb"], entry["memory_free_mb"], entry["utilization_pct"]) == (24576, 20000, 37)
    assert (entry["temperature_c"], entry["power_w"]) == (gpu.temperature_c, gpu.power_w)
    assert (entry["healthy"], entry["health"], entry["utilization"]) == (False, "bad", "37%")
