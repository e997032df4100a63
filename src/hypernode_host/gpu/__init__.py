"""GPUs: discovery (NVML or a simulated inventory), worker slots, health, leases and registrations."""

from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.models import GpuInfo, Slot
from hypernode_host.gpu.slots import plan_node_slots, plan_slots

__all__ = ["GpuInfo", "Slot", "discover", "plan_node_slots", "plan_slots"]
