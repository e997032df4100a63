"""What the node as a whole can serve: this host's slots and those of other hosts' live workers.

Pure: registrations come in as the records ``store.registry.all()`` reads, so the bridge calls
these in a thread with fresh data and tests call them with literals.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import GpuInfo, Slot, SlotState
from hypernode_host.gpu.simulated import Busy
from hypernode_host.state.records import Registration


def serving_slots(local: Sequence[Slot], registrations: Sequence[Registration], host: str) -> list[Slot]:
    """The slots that may take jobs now: what admission routes against.

    This host's planned slots count from the start (their workers may not have registered
    yet), except one with a GPU found unhealthy or whose worker takes no jobs (unhealthy,
    draining after a driver change, busy with foreign processes). Another host's slot counts
    while its worker is registered and serving.
    """
    stopped_here = {r.slot.id for r in registrations if r.host == host and not r.serving}
    slots = [s for s in local if s.healthy and s.id not in stopped_here]
    slots += [r.slot for r in registrations if r.host != host and r.serving]
    return slots


def unhealthy_slots(registrations: Sequence[Registration]) -> list[str]:
    """One line per registered slot that takes no jobs for a fault (unhealthy, or draining after a
    driver change), for the heartbeat and ``check``; a busy slot is not faulty (``busy_slots``)."""
    return [
        f"{r.host} {r.slot.describe()}: {_prefix(r.state)}{r.health}"
        for r in sorted(registrations, key=_order)
        if r.state in (SlotState.UNHEALTHY, SlotState.DRAINING)
    ]


def busy_slots(registrations: Sequence[Registration]) -> list[str]:
    """One line per registered slot whose GPUs run compute processes the node did not start."""
    return [
        f"{r.host} {r.slot.describe()}: {r.health}"
        for r in sorted(registrations, key=_order)
        if r.state is SlotState.BUSY
    ]


def _prefix(state: SlotState) -> str:
    return "draining: " if state is SlotState.DRAINING else ""


def node_driver(gpus: Sequence[GpuInfo]) -> Driver:
    """The driver the node's GPUs read (one driver per host), what heartbeats and capacity advertise."""
    for gpu in gpus:
        if gpu.driver_version or gpu.cuda_version:
            return Driver(gpu.driver_version, gpu.cuda_version)
    return Driver()


def busy_gpus(registrations: Sequence[Registration], host: str) -> dict[str, Busy]:
    """GPU UUID → the job running on it, for ``host``'s registered workers."""
    busy: dict[str, Busy] = {}
    for r in registrations:
        if r.host == host and r.job:
            busy.update({uuid: Busy(r.job, r.job_gpu_memory_mb) for uuid in r.job_gpus})
    return busy


def _order(registration: Registration) -> tuple[str, int]:
    return registration.host, registration.slot.id
