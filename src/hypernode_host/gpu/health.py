"""GPU health: what NVML readings mean for taking jobs, and the simulated way to lose a GPU.

A GPU is unhealthy when NVML cannot reach it (lost, fallen off the bus, gone), when it has
uncorrectable ECC errors or retired pages or remapped rows waiting for a reset, or when the
driver reported a critical Xid for it. A slot with an unhealthy GPU stops taking jobs; its
worker keeps its registration (``healthy=0`` and the reason) so the heartbeat and ``check``
can say why, and resumes by itself once the GPU is healthy again.

Simulated GPUs have no driver to fail: a test or an operator (`hypernode-host sim-gpu`) marks one
lost or gives it Xids in Redis (state/gpuflags.py), and ``simulated_health`` reads those as NVML's.

Two conditions stop a slot without making it unhealthy: a driver that changed under the node
(``driver_problem``: the slot drains) and compute processes the node did not start (``foreign_problem``:
the slot is busy). Both clear by themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hypernode_host.core.cuda import Driver
from hypernode_host.state.gpuflags import SimulatedState

# Xids the driver reports for a job's own faults: the GPU itself is fine. The same list as
# NVIDIA's k8s-device-plugin (internal/rm/health.go); every other critical Xid marks the GPU.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})


@dataclass(frozen=True)
class Readings:
    """What NVML said about one GPU; None where the GPU does not support the query."""

    uuid: str
    lost: str | None = None  # the NVML error when the GPU could not be reached at all
    ecc_uncorrected: int | None = None  # volatile (since the last reset) uncorrectable ECC errors
    retired_pages_pending: bool | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    xids: tuple[int, ...] = ()  # critical Xid events seen for this GPU


@dataclass(frozen=True)
class GpuHealth:
    uuid: str
    healthy: bool
    reason: str = "ok"


def judge(readings: Readings) -> GpuHealth:
    """Healthy, or unhealthy with the first reason an operator needs to act on."""
    reason = _fault(readings)
    return GpuHealth(readings.uuid, reason is None, reason or "ok")


def _fault(r: Readings) -> str | None:
    if r.lost is not None:
        return f"GPU unreachable through NVML ({r.lost})"
    fatal = [x for x in r.xids if x not in APPLICATION_XIDS]
    if fatal:
        return f"critical Xid {', '.join(str(x) for x in sorted(set(fatal)))} reported by the driver"
    if r.ecc_uncorrected:
        return f"{r.ecc_uncorrected} uncorrectable ECC error(s) since the last reset"
    if r.remap_failed:
        return "row remapping failed: the GPU memory needs service"
    if r.retired_pages_pending or r.remap_pending:
        return "memory pages are waiting to be retired: the GPU needs a reset"
    return None


def summarize(health: Iterable[GpuHealth]) -> tuple[bool, str]:
    """A slot's health from its GPUs': (healthy, one line naming each unhealthy GPU)."""
    bad = [h for h in health if not h.healthy]
    if not bad:
        return True, "ok"
    return False, "; ".join(f"{h.uuid}: {h.reason}" for h in bad)


# Simulated GPUs -------------------------------------------------------------------------------


def simulated_health(uuids: Sequence[str], states: Mapping[str, SimulatedState]) -> list[GpuHealth]:
    """The verdict on each simulated GPU from what was injected into it."""
    return [_simulated(u, states.get(u, SimulatedState())) for u in uuids]


def _simulated(uuid: str, state: SimulatedState) -> GpuHealth:
    if state.lost is not None:
        return GpuHealth(uuid, False, f"marked lost: {state.lost}")
    return judge(Readings(uuid, xids=state.xids))


# Conditions that are not faults ---------------------------------------------------------------

DRIVER_FIX = (
    "reboot the host so that the installed driver is the loaded one, then `apt-mark hold` the driver "
    "packages so that unattended upgrades cannot change it under running jobs"
)


def driver_problem(start: Driver | None, now: Driver | str) -> str | None:
    """Why a slot drains: NVML's library disagrees with the loaded driver (``now`` is NVML's error), or
    the driver differs from the one the worker started with; None when it is consistent."""
    if isinstance(now, str):
        return f"{now}; fix: {DRIVER_FIX}"
    if start is not None and start.version and now.version != start.version:
        return f"the GPU driver changed from {start} to {now} since the worker started; fix: {DRIVER_FIX}"
    return None


def foreign_problem(processes: Mapping[str, Sequence[int] | int]) -> str | None:
    """Why a slot is busy: its GPUs run compute processes the node did not start (pids, or a count)."""
    lines = []
    for uuid, found in processes.items():
        count = found if isinstance(found, int) else len(found)
        if count:
            pids = "" if isinstance(found, int) else f" (pid {', '.join(str(p) for p in found[:5])})"
            lines.append(f"{uuid}: {count} compute process(es) the node did not start{pids}")
    return "; ".join(lines) or None
