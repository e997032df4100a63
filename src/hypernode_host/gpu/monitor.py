"""A worker's watch over its slot's GPUs: healthy or not, and why, at every check.

Real GPUs: NVML readings (reachable, ECC, retired pages, row remapping) at each check, plus
the critical Xids an event set has collected since the worker started. An Xid marks its GPU
until the worker restarts, because the GPU needs a reset (and so a restart) to recover.
Simulated GPUs: the lost marks in Redis (state/gpuflags.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from hypernode_host.errors import GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.health import APPLICATION_XIDS, judge, simulated_health, summarize
from hypernode_host.state.gpuflags import GpuFlags

log = logging.getLogger(__name__)


class SlotMonitor:
    def __init__(self, flags: GpuFlags, uuids: Sequence[str], simulated: bool) -> None:
        self.flags = flags
        self.uuids = list(uuids)
        self.simulated = simulated
        self._xids = nvml.XidWatch(self.uuids) if self.uuids and not simulated else None
        self._critical: dict[str, tuple[int, ...]] = {}

    def open(self) -> None:
        if self._xids is not None:
            self._xids.open()

    def close(self) -> None:
        if self._xids is not None:
            self._xids.close()

    def check(self) -> tuple[bool, str]:
        """(healthy, one line): whether the slot may take jobs now, and why not."""
        if not self.uuids:
            return True, "ok"
        if self.simulated:
            return summarize(simulated_health(self.uuids, self.flags.lost(self.uuids)))
        self._collect_xids()
        try:
            readings = nvml.read_health(self.uuids)
        except GpuError as exc:
            return False, str(exc)
        return summarize(judge(dataclasses.replace(r, xids=self._critical.get(r.uuid, ()))) for r in readings)

    def _collect_xids(self) -> None:
        if self._xids is None:
            return
        for uuid, xids in self._xids.poll().items():
            critical = tuple(x for x in xids if x not in APPLICATION_XIDS)
            if critical:
                log.error("GPU %s: critical Xid %s; its slot takes no more jobs", uuid, ", ".join(map(str, critical)))
                self._critical[uuid] = (*self._critical.get(uuid, ()), *critical)
