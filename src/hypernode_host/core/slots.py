"""GPUs and worker slots: how a node's GPUs are shared out among its workers, and where a job is queued.

Pure: discovery (gpu/inventory.py) finds the GPUs, everything here plans with them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hypernode_host.core.jobs import Reason
from hypernode_host.errors import JobRejected

# Dramatiq queue names (dramatiq allows letters, digits, '.', '_' and '-').
CPU_QUEUE = "hn-cpu"
GPU_QUEUE_TEMPLATE = "hn-gpu{count}"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_pct: int = 0
    temperature_c: int | None = None
    power_w: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None  # the newest CUDA the driver supports, "12.4"
    mig_enabled: bool | None = None  # None: the GPU has no MIG mode
    healthy: bool = True
    health: str = "ok"  # one line: why the GPU is unhealthy
    simulated: bool = False
    parent_uuid: str | None = None  # a MIG instance: the UUID of the GPU it is carved from
    mig_profile: str | None = None  # a MIG instance: its profile ("3g.40gb")
    compute_processes: int = 0  # compute processes NVML lists on it (simulated: those `sim-gpu --busy` put there)

    def details(self) -> dict[str, Any]:
        """Every field, for `hypernode-host gpus --json` and the worker registration."""
        return asdict(self)


class SlotState(enum.StrEnum):
    """Whether a slot takes jobs, and if not, which kind of why (its registration's ``state``)."""

    SERVING = "serving"  # takes jobs
    BUSY = "busy"  # its GPU runs compute processes the node did not start: not a fault, no jobs until free
    DRAINING = "draining"  # the driver changed under the node (or NVML disagrees with it): no new jobs
    UNHEALTHY = "unhealthy"  # a GPU is lost, reported a critical Xid, or has memory errors


@dataclass(frozen=True)
class SlotCondition:
    """What a slot's checks found: its state and one line saying why ("ok" while serving)."""

    state: SlotState = SlotState.SERVING
    reason: str = "ok"

    @property
    def serving(self) -> bool:
        return self.state is SlotState.SERVING

    @property
    def healthy(self) -> bool:
        """Its GPUs are fine (a busy or draining slot is not sick)."""
        return self.state is not SlotState.UNHEALTHY


@dataclass(frozen=True)
class Slot:
    """One worker's share of the node: a fixed set of GPUs (none for a CPU slot) and its queues.

    A GPU slot consumes two queues: ``hn-gpu<k>``, shared by every k-GPU slot of every host
    (natural load balancing), and ``hn-gpu<k>-<MiB>mib``, which only slots whose GPUs have exactly
    that much memory consume. Admission uses the second only for a job whose ``gpuMemoryMb``
    some k-GPU slots cannot hold, so such a job never lands on a GPU too small for it.
    """

    id: int
    gpus: tuple[GpuInfo, ...] = ()

    @property
    def queue(self) -> str:
        """The queue every slot of this size serves."""
        return GPU_QUEUE_TEMPLATE.format(count=len(self.gpus)) if self.gpus else CPU_QUEUE

    @property
    def memory_queue(self) -> str | None:
        """The queue only slots of this size and GPU memory serve (None for a CPU slot)."""
        return memory_queue(len(self.gpus), self.min_gpu_memory_mb) if self.gpus else None

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue this slot's worker consumes."""
        return (self.queue,) if self.memory_queue is None else (self.queue, self.memory_queue)

    @property
    def gpu_uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    @property
    def min_gpu_memory_mb(self) -> int:
        return min((g.memory_total_mb for g in self.gpus), default=0)

    @property
    def healthy(self) -> bool:
        return all(g.healthy for g in self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return f"slot {self.id} (CPU)"
        return f"slot {self.id} ({', '.join(f'GPU {g.index} {g.name}' for g in self.gpus)})"


def memory_queue(count: int, memory_mb: int) -> str:
    return f"{GPU_QUEUE_TEMPLATE.format(count=count)}-{memory_mb}mib"


def plan_slots(gpus: Sequence[GpuInfo], cpu_slots: int, gpus_per_worker: int = 1) -> list[Slot]:
    """GPU slots of ``gpus_per_worker`` GPUs each (ids from 0), then ``cpu_slots`` CPU slots.

    GPUs of one model (name and memory) are grouped in index order, so a slot never mixes
    models; a model's GPUs left over after its last full slot make one smaller slot. A GPU in
    MIG mode gets no slot itself: each of its MIG instances is one slot of its own (a job cannot
    span instances), addressed by its MIG UUID.
    """
    models: dict[tuple[str, int], list[GpuInfo]] = {}
    instances: list[GpuInfo] = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.parent_uuid is not None:
            instances.append(gpu)
        elif not gpu.mig_enabled:
            models.setdefault((gpu.name, gpu.memory_total_mb), []).append(gpu)
    groups = [
        tuple(same[i : i + gpus_per_worker]) for same in models.values() for i in range(0, len(same), gpus_per_worker)
    ]
    groups += [(mig,) for mig in instances]
    slots = [Slot(id=i, gpus=group) for i, group in enumerate(groups)]
    slots += [Slot(id=len(groups) + i) for i in range(cpu_slots)]
    return slots


def queue_for(gpus: int, gpu_memory_mb: int | None, slots: Sequence[Slot]) -> str:
    """The queue of a slot that can serve a job needing ``gpus`` GPUs of ``gpu_memory_mb`` MiB each.

    The smallest slots that fit take the job; when some slots of that size have GPUs too small
    for it, it goes to the memory queue of the smallest GPUs that are big enough, which only
    those slots consume. JobRejected with the reason when no slot can ever serve it.
    """
    if gpus == 0:
        if not any(not s.gpus for s in slots):
            raise JobRejected("this node runs no CPU jobs (HN_CPU_SLOTS=0)", reason=Reason.NO_CAPACITY)
        return CPU_QUEUE
    sized = [s for s in slots if len(s.gpus) >= gpus]
    if not sized:
        largest = max((len(s.gpus) for s in slots), default=0)
        raise JobRejected(f"job needs {gpus} GPU(s); this node's GPU slots hold {largest}", reason=Reason.NO_CAPACITY)
    need = gpu_memory_mb or 0
    fitting = [s for s in sized if s.min_gpu_memory_mb >= need]
    if not fitting:
        most = max(s.min_gpu_memory_mb for s in sized)
        raise JobRejected(
            f"job needs {need} MiB of GPU memory; no GPU here has that much (largest {most} MiB)",
            reason=Reason.NO_CAPACITY,
        )
    size = min(len(s.gpus) for s in fitting)
    if all(s.min_gpu_memory_mb >= need for s in sized if len(s.gpus) == size):
        return GPU_QUEUE_TEMPLATE.format(count=size)
    smallest = min(s.min_gpu_memory_mb for s in fitting if len(s.gpus) == size)
    return memory_queue(size, smallest)


def gpus_for(slot: Slot, count: int) -> tuple[str, ...]:
    """The UUIDs a job needing ``count`` GPUs gets on ``slot``: the first ``count`` of the slot's."""
    return slot.gpu_uuids[:count] if count else ()
