"""GPU health: what NVML readings mean for taking jobs, and the simulated way to lose a GPU.

A GPU is unhealthy when NVML cannot reach it (lost, fallen off the bus, gone), when it has
uncorrectable ECC errors or retired pages or remapped rows waiting for a reset, or when the
driver reported a critical Xid for it. A slot with an unhealthy GPU stops taking jobs; its
worker keeps its registration (``healthy=0`` and the reason) so the heartbeat and ``check``
can say why, and resumes by itself once the GPU is healthy again.

Simulated GPUs have no driver to fail: a test or an operator marks one lost in Redis
(state/gpuflags.py), and ``simulated_health`` reads those marks as the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


def simulated_health(uuids: Sequence[str], marks: Mapping[str, str]) -> list[GpuHealth]:
    return [GpuHealth(u, u not in marks, f"marked lost: {marks[u]}" if u in marks else "ok") for u in uuids]
