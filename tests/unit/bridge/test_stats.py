"""What the bridge tells the backend about the node: heartbeat stats and GPU entries, from plain records."""

from __future__ import annotations

import dataclasses

from hypernode_host.bridge.stats import heartbeat_stats, wire_gpu
from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import SlotState, plan_slots
from hypernode_host.gpu.capacity import serving_slots
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
        "busy_slots": [],
        "driver_version": None,
        "cuda_version": None,
        "uptime_24h": None,
        "uptime_7d": None,
        "uptime_30d": None,
    }


def test_busy_and_draining_slots_take_no_jobs_and_the_driver_is_advertised() -> None:
    gpus = simulated_gpus("3", seed="rig", driver=Driver("550.54", "12.4"))
    slots = plan_slots(gpus, 0)
    registrations = [
        Registration(
            "rig", slots[0], state=SlotState.BUSY, health="GPU-a: 1 compute process(es) the node did not start"
        ),
        Registration("rig", slots[1], state=SlotState.DRAINING, health="the GPU driver changed; fix: reboot"),
        Registration("rig", slots[2]),
    ]

    stats = heartbeat_stats({}, 0, 0, registrations, gpus)

    assert stats.free_slots == 1
    assert stats.busy_slots == ["rig slot 0 (GPU 0 Simulated-GPU): GPU-a: 1 compute process(es) the node did not start"]
    assert stats.unhealthy_slots == ["rig slot 1 (GPU 1 Simulated-GPU): draining: the GPU driver changed; fix: reboot"]
    assert (stats.driver_version, stats.cuda_version) == ("550.54", "12.4")
    assert {(g.driver_version, g.cuda_version) for g in stats.gpus} == {("550.54", "12.4")}
    assert [s.id for s in serving_slots(slots, registrations, host="rig")] == [2]


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
