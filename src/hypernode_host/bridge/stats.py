"""What the bridge tells the backend about the node, pure: the heartbeat's stats and the GPU entries.

The wire edge: a GpuInfo (what the agent knows about a GPU) becomes a GpuEntry (what the protocol
sends) here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypernode_host.core.messages import GpuEntry, HeartbeatStats, gpu_entry
from hypernode_host.core.slots import GpuInfo
from hypernode_host.gpu.capacity import busy_slots, node_driver, unhealthy_slots
from hypernode_host.state.records import Registration


def wire_gpu(gpu: GpuInfo) -> GpuEntry:
    """A GPU as the wire protocol writes it: upstream's keys, ours, its sensors and its health."""
    base = gpu_entry(gpu.index, gpu.uuid, gpu.name, gpu.memory_total_mb, gpu.memory_free_mb, gpu.utilization_pct)
    sensors = {"temperature_c": gpu.temperature_c, "power_w": gpu.power_w}
    driver = {"driver_version": gpu.driver_version, "cuda_version": gpu.cuda_version}
    return base.model_copy(update={**sensors, **driver, "healthy": gpu.healthy, "health": gpu.health})


def heartbeat_stats(
    counters: Mapping[str, int],
    queued: int,
    running: int,
    registrations: Sequence[Registration],
    gpus: Sequence[GpuInfo],
) -> HeartbeatStats:
    """The stats of a heartbeat; ``total_uptime`` is 0 here: the bridge sets it when the beat is sent."""
    driver = node_driver(gpus)
    return HeartbeatStats(
        jobs_completed=counters.get("completed", 0),
        jobs_failed=counters.get("failed", 0),
        total_uptime=0,
        active_jobs=running,
        gpus=[wire_gpu(g) for g in gpus],
        queued_jobs=queued,
        free_slots=sum(1 for r in registrations if r.serving and not r.job),
        unhealthy_slots=unhealthy_slots(registrations),
        busy_slots=busy_slots(registrations),
        driver_version=driver.version,
        cuda_version=driver.cuda,
    )
