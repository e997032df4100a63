"""Worker slots: pure mapping from GPUs and settings to the slots `up` starts workers for."""

from __future__ import annotations

from collections.abc import Sequence

from hypernode_host.gpu.models import GpuInfo, Slot


def plan_slots(gpus: Sequence[GpuInfo], cpu_slots: int) -> list[Slot]:
    """One slot per GPU (ids 0..G-1), then ``cpu_slots`` CPU slots."""
    slots = [Slot(id=i, gpus=(gpu,)) for i, gpu in enumerate(gpus)]
    slots += [Slot(id=len(gpus) + i) for i in range(cpu_slots)]
    return slots
