"""What the agent knows about a GPU and a worker slot."""

from __future__ import annotations

from dataclasses import dataclass

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
    simulated: bool = False

    def entry(self) -> GpuEntry:
        """This GPU as the wire protocol writes it."""
        return gpu_entry(
            self.index, self.uuid, self.name, self.memory_total_mb, self.memory_free_mb, self.utilization_pct
        )


@dataclass(frozen=True)
class Slot:
    """One worker's share of the node: a fixed set of GPUs (none for a CPU slot) and its queue."""

    id: int
    gpus: tuple[GpuInfo, ...] = ()

    @property
    def queue(self) -> str:
        return C.GPU_QUEUE_TEMPLATE.format(count=len(self.gpus)) if self.gpus else C.CPU_QUEUE

    @property
    def gpu_uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    @property
    def min_gpu_memory_mb(self) -> int:
        return min((g.memory_total_mb for g in self.gpus), default=0)

    def describe(self) -> str:
        if not self.gpus:
            return f"slot {self.id} (CPU)"
        return f"slot {self.id} ({', '.join(f'GPU {g.index} {g.name}' for g in self.gpus)})"
