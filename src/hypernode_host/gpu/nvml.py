"""The only module that imports pynvml (from the nvidia-ml-py distribution).

Every call is synchronous; callers on an event loop run it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypernode_host.errors import GpuError
from hypernode_host.gpu.models import GpuInfo

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    # Old pynvml releases returned bytes, current ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def session() -> Iterator[Any]:
    """An initialised NVML; GpuError with one line when there is no driver or library."""
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
        raise GpuError(f"pynvml is not installed: {exc}") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise GpuError(f"NVML unavailable ({exc}); this node runs CPU jobs only") from None
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _optional(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:
        return None


def list_gpus() -> list[GpuInfo]:
    """Every GPU NVML sees, with memory and utilisation now."""
    with session() as nvml:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            temp = _optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            power = _optional(nvml.nvmlDeviceGetPowerUsage, handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_total_mb=int(memory.total) // (1 << 20),
                    memory_free_mb=int(memory.free) // (1 << 20),
                    utilization_pct=int(util.gpu) if util is not None else 0,
                    temperature_c=int(temp) if temp is not None else None,
                    power_w=float(power) / 1000 if power is not None else None,
                )
            )
        return gpus
