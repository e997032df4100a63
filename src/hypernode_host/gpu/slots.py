"""Worker slots: pure mapping from GPUs and settings to the slots `up` starts workers for."""

from __future__ import annotations

from collections.abc import Sequence

from hypernode_host import constants as C
from hypernode_host.errors import JobRejected
from hypernode_host.gpu.models import GpuInfo, Slot


def plan_slots(gpus: Sequence[GpuInfo], cpu_slots: int) -> list[Slot]:
    """One slot per GPU (ids 0..G-1), then ``cpu_slots`` CPU slots."""
    slots = [Slot(id=i, gpus=(gpu,)) for i, gpu in enumerate(gpus)]
    slots += [Slot(id=len(gpus) + i) for i in range(cpu_slots)]
    return slots


def queue_for(gpus: int, gpu_memory_mb: int | None, slots: Sequence[Slot]) -> str:
    """The queue of a slot that can serve a job needing ``gpus`` GPUs; JobRejected if none ever can."""
    if gpus == 0:
        if not any(not s.gpus for s in slots):
            raise JobRejected("this node runs no CPU jobs (HN_CPU_SLOTS=0)")
        return C.CPU_QUEUE
    fitting = [s for s in slots if len(s.gpus) == gpus]
    if not fitting:
        largest = max((len(s.gpus) for s in slots), default=0)
        raise JobRejected(f"job needs {gpus} GPU(s); this node's GPU slots hold {largest}")
    if gpu_memory_mb and all(s.min_gpu_memory_mb < gpu_memory_mb for s in fitting):
        raise JobRejected(f"job needs {gpu_memory_mb} MiB of GPU memory; no GPU here has that much")
    return fitting[0].queue
