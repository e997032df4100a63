"""What the agent knows about a GPU and a worker slot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hypernode_host import constants as C
from hypernode_host.messages import GpuEntry, gpu_entry


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

    def entry(self) -> GpuEntry:
        """This GPU as the wire protocol writes it."""
        base = gpu_entry(
            self.index, self.uuid, self.name, self.memory_total_mb, self.memory_free_mb, self.utilization_pct
        )
        sensors = {"temperature_c": self.temperature_c, "power_w": self.power_w}
        return base.model_copy(update={**sensors, "healthy": self.healthy, "health": self.health})

    def details(self) -> dict[str, Any]:
        """Every field, for `hypernode-host gpus --json` and the worker registration."""
        return asdict(self)


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
        return C.GPU_QUEUE_TEMPLATE.format(count=len(self.gpus)) if self.gpus else C.CPU_QUEUE

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
    return f"{C.GPU_QUEUE_TEMPLATE.format(count=count)}-{memory_mb}mib"
