"""Worker slots: how a node's GPUs are shared out among its workers, and where a job is queued.

Pure apart from ``plan_node_slots``, which discovers the GPUs first.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypernode_host import constants as C
from hypernode_host.errors import JobRejected
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.models import GpuInfo, Slot, memory_queue
from hypernode_host.settings import Settings


def plan_slots(gpus: Sequence[GpuInfo], cpu_slots: int, gpus_per_worker: int = 1) -> list[Slot]:
    """GPU slots of ``gpus_per_worker`` GPUs each (ids from 0), then ``cpu_slots`` CPU slots.

    GPUs of one model (name and memory) are grouped in index order, so a slot never mixes
    models; a model's GPUs left over after its last full slot make one smaller slot.
    """
    models: dict[tuple[str, int], list[GpuInfo]] = {}
    for gpu in sorted(gpus, key=lambda g: g.index):
        models.setdefault((gpu.name, gpu.memory_total_mb), []).append(gpu)
    groups = [
        tuple(same[i : i + gpus_per_worker]) for same in models.values() for i in range(0, len(same), gpus_per_worker)
    ]
    slots = [Slot(id=i, gpus=group) for i, group in enumerate(groups)]
    slots += [Slot(id=len(groups) + i) for i in range(cpu_slots)]
    return slots


def plan_node_slots(settings: Settings) -> list[Slot]:
    """This node's slots as every part must see them: bridge, `up`, workers and `gpus`."""
    return plan_slots(discover(settings), settings.cpu_slots, settings.gpus_per_worker)


def queue_for(gpus: int, gpu_memory_mb: int | None, slots: Sequence[Slot]) -> str:
    """The queue of a slot that can serve a job needing ``gpus`` GPUs of ``gpu_memory_mb`` MiB each.

    The smallest slots that fit take the job; when some slots of that size have GPUs too small
    for it, it goes to the memory queue of the smallest GPUs that are big enough, which only
    those slots consume. JobRejected with the reason when no slot can ever serve it.
    """
    if gpus == 0:
        if not any(not s.gpus for s in slots):
            raise JobRejected("this node runs no CPU jobs (HN_CPU_SLOTS=0)")
        return C.CPU_QUEUE
    sized = [s for s in slots if len(s.gpus) >= gpus]
    if not sized:
        largest = max((len(s.gpus) for s in slots), default=0)
        raise JobRejected(f"job needs {gpus} GPU(s); this node's GPU slots hold {largest}")
    need = gpu_memory_mb or 0
    fitting = [s for s in sized if s.min_gpu_memory_mb >= need]
    if not fitting:
        most = max(s.min_gpu_memory_mb for s in sized)
        raise JobRejected(f"job needs {need} MiB of GPU memory; no GPU here has that much (largest {most} MiB)")
    size = min(len(s.gpus) for s in fitting)
    if all(s.min_gpu_memory_mb >= need for s in sized if len(s.gpus) == size):
        return C.GPU_QUEUE_TEMPLATE.format(count=size)
    smallest = min(s.min_gpu_memory_mb for s in fitting if len(s.gpus) == size)
    return memory_queue(size, smallest)


def gpus_for(slot: Slot, count: int) -> tuple[str, ...]:
    """The UUIDs a job needing ``count`` GPUs gets on ``slot``: the first ``count`` of the slot's."""
    return slot.gpu_uuids[:count] if count else ()
