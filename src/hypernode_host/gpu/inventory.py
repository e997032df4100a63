"""Which GPUs this node has (simulated when HN_SIMULATE_GPUS is set, else what NVML reports), and its slots.

Synchronous (NVML, Redis): the bridge calls ``discover`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging

from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import GpuInfo, Slot, plan_slots
from hypernode_host.errors import GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.capacity import busy_gpus
from hypernode_host.gpu.simulated import simulated_gpus, start_driver, with_driver, with_load, with_states
from hypernode_host.settings import Settings
from hypernode_host.state import RedisError, Store

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0  # `gpus` must answer even when Redis is down: then the GPUs read idle


def discover(settings: Settings, store: Store | None = None) -> list[GpuInfo]:
    """The node's GPUs; an empty list (and one log line) when there is no driver or GPU.

    Simulated GPUs read their load and lost marks from Redis: through ``store`` when the
    caller has one (the bridge, every heartbeat), else over a connection opened for the call.
    """
    if settings.simulate_gpus is not None:
        driver = start_driver(settings.simulate_driver)
        gpus = simulated_gpus(settings.simulate_gpus, seed=settings.node_name, driver=driver)
        if store is not None:
            return observe_simulated(store, settings.node_name, gpus)
        with Store.open(settings, timeout_s=REDIS_TIMEOUT_S) as own:
            return observe_simulated(own, settings.node_name, gpus)
    try:
        return nvml.list_gpus()
    except GpuError as exc:
        log.info("%s", exc)
        return []


def observe_simulated(store: Store, host: str, gpus: list[GpuInfo]) -> list[GpuInfo]:
    """Simulated GPUs as ``host``'s running jobs and what `sim-gpu` put in Redis make them read now."""
    if not gpus:
        return gpus
    try:
        busy = busy_gpus(store.registry.all(), host)
        states = store.gpuflags.states([g.uuid for g in gpus])
        driver = store.gpuflags.driver(host)
    except RedisError as exc:
        log.debug("simulated GPUs read idle: Redis unavailable (%s)", exc)
        return gpus
    gpus = with_states(with_load(gpus, busy), states)
    return with_driver(gpus, Driver(driver[0], driver[1] or None)) if driver else gpus


def plan_node_slots(settings: Settings) -> list[Slot]:
    """This node's slots as every part must see them: bridge, `up`, workers and `gpus`."""
    return plan_slots(discover(settings), settings.cpu_slots, settings.gpus_per_worker)
