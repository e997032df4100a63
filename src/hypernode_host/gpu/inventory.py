"""Which GPUs this node has: simulated when HN_SIMULATE_GPUS is set, else what NVML reports."""

from __future__ import annotations

import logging

from hypernode_host.errors import GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.models import GpuInfo
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.settings import Settings

log = logging.getLogger(__name__)


def discover(settings: Settings) -> list[GpuInfo]:
    """The node's GPUs; an empty list (and one log line) when there is no driver or GPU."""
    if settings.simulate_gpus is not None:
        return simulated_gpus(settings.simulate_gpus)
    try:
        return nvml.list_gpus()
    except GpuError as exc:
        log.info("%s", exc)
        return []
