"""The only module that imports pynvml (from the nvidia-ml-py distribution).

Every call is synchronous; callers on an event loop run it in a thread. Each function opens
its own NVML session (``nvmlInit`` is reference-counted, so sessions nest), except XidWatch,
which keeps one open: NVML reports an Xid only to an event set registered before it happens.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hypernode_host.core.slots import GpuInfo
from hypernode_host.errors import DriverMismatch, GpuError
from hypernode_host.gpu.health import Readings, judge

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    # Old pynvml releases returned bytes, current ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _import() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
        raise GpuError(f"pynvml is not installed: {exc}") from None
    return pynvml


@contextmanager
def session() -> Iterator[Any]:
    """An initialised NVML; GpuError with one line when there is no driver or library."""
    nvml = _import()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if exc.value == getattr(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", None):
            raise DriverMismatch(f"Failed to initialize NVML: Driver/library version mismatch ({exc})") from None
        raise GpuError(f"NVML unavailable ({exc}); this node runs CPU jobs only") from None
    try:
        yield nvml
    finally:
        nvml.nvmlShutdown()


def _maybe(nvml: Any, call: Any, *args: Any) -> Any:
    """``call(*args)``, or None where the GPU does not support it; a lost GPU still raises."""
    try:
        return call(*args)
    except nvml.NVMLError as exc:
        if exc.value == nvml.NVML_ERROR_GPU_IS_LOST:
            raise
        return None


def cuda_version(encoded: int | None) -> str | None:
    """NVML's CUDA version integer (12040) as people write it ("12.4")."""
    if not encoded:
        return None
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def driver_versions() -> tuple[str | None, str | None]:
    """(driver version, newest CUDA it supports) now; DriverMismatch after an upgrade without a reboot."""
    with session() as nvml:
        driver = _maybe(nvml, nvml.nvmlSystemGetDriverVersion)
        return (_text(driver) if driver else None, cuda_version(_maybe(nvml, nvml.nvmlSystemGetCudaDriverVersion)))


def compute_processes(uuids: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The pids of the compute processes on each GPU (by UUID) that NVML lists; () where it cannot say."""
    with session() as nvml:
        found: dict[str, tuple[int, ...]] = {}
        for uuid in uuids:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid.encode())
                listed = _maybe(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
            except nvml.NVMLError:
                listed = []  # an unreachable GPU is the health check's to report
            found[uuid] = tuple(int(p.pid) for p in listed)
        return found


def list_gpus() -> list[GpuInfo]:
    """Every GPU NVML sees, with memory, utilisation and health now.

    A GPU whose UUID cannot be read gets no slot (logged); one that fails after that is
    listed unhealthy, so its slot is kept and reports why it takes no jobs.
    """
    with session() as nvml:
        driver = _maybe(nvml, nvml.nvmlSystemGetDriverVersion)
        versions = (_text(driver) if driver else None, cuda_version(_maybe(nvml, nvml.nvmlSystemGetCudaDriverVersion)))
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot count the GPUs ({exc}); this node runs CPU jobs only") from None
        gpus = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            except nvml.NVMLError as exc:
                log.warning("GPU %d cannot be read (%s); it gets no slot", index, exc)
                continue
            gpu = _describe(nvml, index, handle, uuid, versions)
            gpus.append(gpu)
            if gpu.mig_enabled:
                gpus += _instances(nvml, handle, gpu)
        return gpus


def _instances(nvml: Any, handle: Any, gpu: GpuInfo) -> list[GpuInfo]:
    """The MIG instances carved from ``gpu``: each a GPU of its own, by MIG UUID (its profile named)."""
    try:
        count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except nvml.NVMLError as exc:
        log.warning("GPU %d (%s): its MIG instances cannot be listed (%s)", gpu.index, gpu.uuid, exc)
        return []
    found = []
    for slot in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:
            continue  # no instance in this position
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(mig))
            memory = nvml.nvmlDeviceGetMemoryInfo(mig)
            attributes = _maybe(nvml, nvml.nvmlDeviceGetAttributes, mig)
        except nvml.NVMLError as exc:
            log.warning("GPU %d: MIG instance %d cannot be read (%s); it gets no slot", gpu.index, slot, exc)
            continue
        total = int(memory.total) // (1 << 20)
        profile = (
            f"{int(attributes.gpuInstanceSliceCount)}g.{round(total / 1024)}gb" if attributes is not None else "mig"
        )
        found.append(
            dataclasses.replace(
                gpu,
                uuid=uuid,
                name=f"{gpu.name} MIG {profile}",
                memory_total_mb=total,
                memory_free_mb=int(memory.free) // (1 << 20),
                mig_enabled=None,
                parent_uuid=gpu.uuid,
                mig_profile=profile,
            )
        )
    return found


def _describe(nvml: Any, index: int, handle: Any, uuid: str, versions: tuple[str | None, str | None]) -> GpuInfo:
    try:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        util = _maybe(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        temp = _maybe(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        power = _maybe(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        mig = _maybe(nvml, nvml.nvmlDeviceGetMigMode, handle)
        processes = _maybe(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        health = judge(_readings(nvml, handle, uuid))
        name = _text(nvml.nvmlDeviceGetName(handle))
    except nvml.NVMLError as exc:
        log.warning("GPU %d (%s) failed while being read: %s", index, uuid, exc)
        lost = judge(Readings(uuid, lost=str(exc)))
        return GpuInfo(index, uuid, "unknown", 0, 0, healthy=False, health=lost.reason)
    return GpuInfo(
        index=index,
        uuid=uuid,
        name=name,
        memory_total_mb=int(memory.total) // (1 << 20),
        memory_free_mb=int(memory.free) // (1 << 20),
        utilization_pct=int(util.gpu) if util is not None else 0,
        temperature_c=int(temp) if temp is not None else None,
        power_w=float(power) / 1000 if power is not None else None,
        driver_version=versions[0],
        cuda_version=versions[1],
        mig_enabled=bool(mig[0] == nvml.NVML_DEVICE_MIG_ENABLE) if mig is not None else None,
        compute_processes=len(processes) if processes is not None else 0,
        healthy=health.healthy,
        health=health.reason,
    )


def _readings(nvml: Any, handle: Any, uuid: str) -> Readings:
    ecc = _maybe(
        nvml,
        nvml.nvmlDeviceGetTotalEccErrors,
        handle,
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        nvml.NVML_VOLATILE_ECC,
    )
    pending = _maybe(nvml, nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    rows = _maybe(nvml, nvml.nvmlDeviceGetRemappedRows, handle)  # (corrected, uncorrected, pending, failed)
    return Readings(
        uuid=uuid,
        ecc_uncorrected=int(ecc) if ecc is not None else None,
        retired_pages_pending=pending == nvml.NVML_FEATURE_ENABLED if pending is not None else None,
        remap_pending=bool(rows[2]) if rows is not None else None,
        remap_failed=bool(rows[3]) if rows is not None else None,
    )


def read_health(uuids: Sequence[str]) -> list[Readings]:
    """NVML's readings for each GPU named by UUID; a GPU it cannot reach reads as lost."""
    with session() as nvml:
        return [_probe(nvml, uuid) for uuid in uuids]


def _probe(nvml: Any, uuid: str) -> Readings:
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        return _readings(nvml, handle, uuid)
    except nvml.NVMLError as exc:
        return Readings(uuid, lost=str(exc))


class XidWatch:
    """Critical Xid events of some GPUs, from an NVML event set kept open between polls."""

    def __init__(self, uuids: Sequence[str]) -> None:
        self.uuids = list(uuids)
        self._nvml: Any = None
        self._events: Any = None

    def open(self) -> None:
        """Register for Xid events; without NVML or event support, log it and watch nothing."""
        nvml = _import()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            log.warning("Xid events not watched: NVML unavailable (%s)", exc)
            return
        self._nvml = nvml
        try:
            self._events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("Xid events not watched: %s", exc)
            return
        for uuid in self.uuids:
            self._register(uuid)

    def _register(self, uuid: str) -> None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid.encode())
            if not nvml.nvmlDeviceGetSupportedEventTypes(handle) & nvml.nvmlEventTypeXidCriticalError:
                log.info("GPU %s reports no Xid events; its ECC and reachability are still checked", uuid)
                return
            nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._events)
        except nvml.NVMLError as exc:
            log.warning("Xid events of GPU %s not watched: %s", uuid, exc)

    def poll(self) -> dict[str, tuple[int, ...]]:
        """The Xids reported since the last poll, by GPU UUID (without waiting)."""
        if self._events is None:
            return {}
        nvml = self._nvml
        seen: dict[str, tuple[int, ...]] = {}
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError as exc:
                if exc.value != nvml.NVML_ERROR_TIMEOUT:
                    log.warning("reading Xid events failed: %s", exc)
                return seen
            if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
                continue
            for uuid in self._owners(data.device):
                seen[uuid] = (*seen.get(uuid, ()), int(data.eventData))

    def _owners(self, device: Any) -> list[str]:
        # An event NVML cannot attribute to a device concerns them all (what the k8s plugin assumes).
        try:
            uuid = _text(self._nvml.nvmlDeviceGetUUID(device))
        except self._nvml.NVMLError:
            return list(self.uuids)
        return [uuid] if uuid in self.uuids else []

    def close(self) -> None:
        if self._nvml is None:
            return
        if self._events is not None:
            try:
                self._nvml.nvmlEventSetFree(self._events)
            except self._nvml.NVMLError as exc:
                log.debug("freeing the Xid event set: %s", exc)
            self._events = None
        self._nvml.nvmlShutdown()
        self._nvml = None
