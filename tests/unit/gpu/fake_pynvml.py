"""A fake ``pynvml`` module for the NVML adapter's unit tests (no machine here has the driver).

It answers like nvidia-ml-py does: NVMLError with a ``value``, device handles, structs with the
same field names, bytes where old releases return bytes; FakeGpu fields drive every answer.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

ERRORS = {
    "NOT_SUPPORTED": 3,
    "DRIVER_NOT_LOADED": 9,
    "TIMEOUT": 10,
    "GPU_IS_LOST": 15,
    "LIB_RM_VERSION_MISMATCH": 18,
    "NOT_FOUND": 6,
    "UNKNOWN": 999,
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        names = {v: k for k, v in ERRORS.items()}
        return names.get(self.value, str(self.value)).replace("_", " ").title()


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    total_mib: int = 81559
    free_mib: int = 80000
    util: int = 37
    temp: int = 41
    power_mw: int = 71500
    mig: int | None = 0  # None: no MIG mode (NOT_SUPPORTED)
    ecc_uncorrected: int | None = 0
    retired_pending: int | None = 0
    remapped: tuple[int, int, int, int] | None = (0, 0, 0, 0)
    lost: bool = False  # every call about it fails with GPU_IS_LOST
    xid_events: bool = True
    pending_xids: list[int] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)  # pids of the compute processes on it
    instances: list[FakeGpu] = field(default_factory=list)  # its MIG instances (with mig=1)
    slices: int = 0  # a MIG instance: its compute slices


@dataclass
class Process:
    pid: int
    usedGpuMemory: int


@dataclass
class Event:
    device: Any
    eventType: int
    eventData: int


class FakeNvml:
    """The state behind the fake module; tests change it between calls."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.init_error: int | None = None
        self.initialised = 0
        self.registered: list[str] = []
        self.driver = "550.54.15"
        self.cuda = 12040

    def module(self) -> types.ModuleType:
        m = types.ModuleType("pynvml")
        m.NVMLError = NVMLError  # type: ignore[attr-defined]
        for name, value in ERRORS.items():
            setattr(m, f"NVML_ERROR_{name}", value)
        constants = {
            "NVML_TEMPERATURE_GPU": 0,
            "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
            "NVML_VOLATILE_ECC": 0,
            "NVML_FEATURE_ENABLED": 1,
            "NVML_DEVICE_MIG_ENABLE": 1,
            "nvmlEventTypeXidCriticalError": 8,
        }
        for name, value in constants.items():
            setattr(m, name, value)
        for name in dir(self):
            if name.startswith("nvml"):
                setattr(m, name, getattr(self, name))
        return m

    # library
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Process]:
        return [Process(pid, 1 << 30) for pid in self._alive(gpu).processes]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    # handles are the FakeGpu itself
    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self._alive(self.gpus[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes) -> FakeGpu:
        assert isinstance(uuid, bytes), "pynvml's c_char_p wants bytes"
        for gpu in [*self.gpus, *(m for g in self.gpus for m in g.instances)]:
            if gpu.uuid == uuid.decode():
                return self._alive(gpu)
        raise NVMLError(ERRORS["UNKNOWN"])

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        return 7 if self._alive(gpu).mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, index: int) -> FakeGpu:
        if index >= len(gpu.instances):
            raise NVMLError(ERRORS["NOT_FOUND"])
        return gpu.instances[index]

    def nvmlDeviceGetAttributes(self, gpu: FakeGpu) -> Any:
        return types.SimpleNamespace(gpuInstanceSliceCount=gpu.slices, memorySizeMB=gpu.total_mib)

    def _alive(self, gpu: FakeGpu) -> FakeGpu:
        if gpu.lost:
            raise NVMLError(ERRORS["GPU_IS_LOST"])
        return gpu

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> bytes:
        return gpu.uuid.encode()  # old releases answer bytes: the adapter must decode

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return self._alive(gpu).name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Any:
        self._alive(gpu)
        return types.SimpleNamespace(total=gpu.total_mib << 20, free=gpu.free_mib << 20, used=0)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        return types.SimpleNamespace(gpu=self._alive(gpu).util, memory=0)

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        return self._alive(gpu).temp

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return self._alive(gpu).power_mw

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        return [self._supported(self._alive(gpu).mig), 0]

    def nvmlDeviceGetTotalEccErrors(self, gpu: FakeGpu, kind: int, counter: int) -> int:
        assert (kind, counter) == (1, 0), "uncorrected, volatile"
        return self._supported(self._alive(gpu).ecc_uncorrected)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, gpu: FakeGpu) -> int:
        return self._supported(self._alive(gpu).retired_pending)

    def nvmlDeviceGetRemappedRows(self, gpu: FakeGpu) -> tuple[int, int, int, int]:
        return self._supported(self._alive(gpu).remapped)

    def _supported(self, value: Any) -> Any:
        if value is None:
            raise NVMLError(ERRORS["NOT_SUPPORTED"])
        return value

    # events
    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceGetSupportedEventTypes(self, gpu: FakeGpu) -> int:
        return 8 | 2 if gpu.xid_events else 2

    def nvmlDeviceRegisterEvents(self, gpu: FakeGpu, types_: int, event_set: str) -> None:
        assert types_ == 8 and event_set == "event-set"
        self.registered.append(gpu.uuid)

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> Event:
        for gpu in self.gpus:
            if gpu.pending_xids and gpu.uuid in self.registered:
                return Event(device=gpu, eventType=8, eventData=gpu.pending_xids.pop(0))
        raise NVMLError(ERRORS["TIMEOUT"])

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.registered.clear()
