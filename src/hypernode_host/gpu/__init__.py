"""GPUs: discovery (NVML or a simulated inventory) and worker slots."""

from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.models import GpuInfo, Slot
from hypernode_host.gpu.slots import plan_slots

__all__ = ["GpuInfo", "Slot", "discover", "plan_slots"]
