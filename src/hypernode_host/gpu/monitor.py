"""A worker's watch over its slot's GPUs: whether the slot takes jobs, and why not, at every check.

Real GPUs: NVML readings (reachable, ECC, retired pages, row remapping) at each check, plus
the critical Xids an event set has collected since the worker started. An Xid marks its GPU
until the worker restarts, because the GPU needs a reset (and so a restart) to recover.
Simulated GPUs: what `sim-gpu` injected in Redis (state/gpuflags.py), read the same way.

Besides health, two conditions that clear by themselves: the driver (an NVML library that no
longer matches the loaded kernel driver, or a version other than the one the worker started
with) drains the slot; compute processes the node did not start make it busy. While the slot runs
a job, the processes on its GPUs are the job's (the lease gives the GPU to this slot alone, and
only the job's container is given it), so foreign processes are looked for only while it is idle.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence

from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import SlotCondition, SlotState
from hypernode_host.errors import DriverMismatch, GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.health import (
    APPLICATION_XIDS,
    driver_problem,
    foreign_problem,
    judge,
    simulated_health,
    summarize,
)
from hypernode_host.gpu.simulated import UNSET_DRIVER
from hypernode_host.state.gpuflags import GpuFlags

log = logging.getLogger(__name__)


class SlotMonitor:
    def __init__(
        self,
        flags: GpuFlags,
        uuids: Sequence[str],
        simulated: bool,
        host: str = "",
        simulated_driver: Driver = UNSET_DRIVER,
        parents: Mapping[str, str] | None = None,
    ) -> None:
        self.flags = flags
        self.uuids = list(uuids)
        self.simulated = simulated
        self.host = host
        self.simulated_driver = simulated_driver
        # A MIG instance's health and Xids are its GPU's: NVML reports them for the physical GPU.
        self.physical = list(dict.fromkeys((parents or {}).get(u, u) for u in self.uuids))
        self._xids = nvml.XidWatch(self.physical) if self.uuids and not simulated else None
        self._critical: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()  # the watch thread and the job's runner both check
        self.start_driver: Driver | None = None  # the driver when the worker started (None: unreadable then)
        self.driver: Driver | None = None  # the driver at the last check

    def open(self) -> None:
        if self._xids is not None:
            self._xids.open()
        if self.uuids:
            reading = self._read_driver()
            self.start_driver = self.driver = reading if isinstance(reading, Driver) else None

    def close(self) -> None:
        if self._xids is not None:
            self._xids.close()

    def check(self, running: bool = False) -> SlotCondition:
        """Whether the slot may take jobs now, and why not; ``running``: it runs a job now."""
        if not self.uuids:
            return SlotCondition()
        with self._lock:
            return self._check(running)

    def _check(self, running: bool) -> SlotCondition:
        driver = self._read_driver()
        if isinstance(driver, Driver):
            self.driver = driver
        healthy, reason = self._health()
        if not healthy:
            return SlotCondition(SlotState.UNHEALTHY, reason)
        problem = driver_problem(self.start_driver, driver)
        if problem is not None:
            return SlotCondition(SlotState.DRAINING, problem)
        busy = None if running else foreign_problem(self._processes())
        if busy is not None:
            return SlotCondition(SlotState.BUSY, busy)
        return SlotCondition()

    def _read_driver(self) -> Driver | str:
        """The driver now; NVML's error as text when it disagrees with the loaded driver."""
        if self.simulated:
            override = self.flags.driver(self.host)
            return Driver(override[0], override[1] or None) if override else self.simulated_driver
        try:
            return Driver(*nvml.driver_versions())
        except DriverMismatch as exc:
            return str(exc)
        except GpuError:
            return self.driver or Driver()  # no NVML at all: the health check says so

    def _health(self) -> tuple[bool, str]:
        if self.simulated:
            return summarize(simulated_health(self.uuids, self.flags.states(self.uuids)))
        self._collect_xids()
        try:
            readings = nvml.read_health(self.physical)
        except DriverMismatch:
            return True, "ok"  # the GPUs are not at fault: the driver check drains the slot
        except GpuError as exc:
            return False, str(exc)
        return summarize(judge(dataclasses.replace(r, xids=self._critical.get(r.uuid, ()))) for r in readings)

    def _processes(self) -> dict[str, Sequence[int] | int]:
        if self.simulated:
            return {u: s.foreign for u, s in self.flags.states(self.uuids).items()}
        try:
            return dict(nvml.compute_processes(self.uuids))
        except GpuError:
            return {}

    def _collect_xids(self) -> None:
        if self._xids is None:
            return
        for uuid, xids in self._xids.poll().items():
            critical = tuple(x for x in xids if x not in APPLICATION_XIDS)
            if critical:
                log.error("GPU %s: critical Xid %s; its slot takes no more jobs", uuid, ", ".join(map(str, critical)))
                self._critical[uuid] = (*self._critical.get(uuid, ()), *critical)
