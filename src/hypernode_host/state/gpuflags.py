"""Simulated GPU faults and states (keys.GPU_LOST, GPU_SIM, SIM_DRIVER): simulated GPUs have no driver
to fail, so `hypernode-host sim-gpu` (or a test) injects what a real one would report.

``SET hn:gpu-lost:<uuid> "<reason>"`` marks one lost and ``DEL`` heals it; ``hn:gpu-sim:<uuid>``
holds the critical Xids it reported and the compute processes not started by the node on it;
``hn:sim-driver:<host>`` the driver and CUDA version the host's simulated GPUs read now (unset:
HN_SIMULATE_DRIVER's). Only simulated GPUs read these keys; a real GPU's state comes from NVML alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from hypernode_host.state import keys


@dataclass(frozen=True)
class SimulatedState:
    """What was injected into one simulated GPU."""

    lost: str | None = None  # why it is lost; None: reachable
    xids: tuple[int, ...] = ()  # Xids the "driver" reported for it, in order
    foreign: int = 0  # compute processes on it that the node did not start


class GpuFlags:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def mark_lost(self, uuid: str, reason: str = "simulated GPU lost") -> None:
        self._client.set(keys.GPU_LOST.format(uuid=uuid), reason)

    def clear_lost(self, uuid: str) -> None:
        self._client.delete(keys.GPU_LOST.format(uuid=uuid))

    def lost(self, uuids: Sequence[str]) -> dict[str, str]:
        """The GPUs among ``uuids`` marked lost, with the reason given."""
        if not uuids:
            return {}
        values = cast(list[str | None], self._client.mget([keys.GPU_LOST.format(uuid=u) for u in uuids]))
        return {u: v for u, v in zip(uuids, values, strict=True) if v is not None}

    def add_xid(self, uuid: str, xid: int) -> None:
        """Record that the driver reported Xid ``xid`` for the GPU (kept until ``heal``)."""
        key = keys.GPU_SIM.format(uuid=uuid)
        current = cast(str | None, self._client.hget(key, "xids")) or ""
        self._client.hset(key, "xids", ",".join([p for p in current.split(",") if p] + [str(int(xid))]))

    def set_foreign(self, uuid: str, processes: int) -> None:
        """``processes`` compute processes the node did not start now run on the GPU (0: none)."""
        self._client.hset(keys.GPU_SIM.format(uuid=uuid), "foreign", max(int(processes), 0))

    def heal(self, uuid: str) -> None:
        """The GPU reachable again, with its Xids forgotten (as after a reset); foreign processes stay."""
        pipe = self._client.pipeline()
        pipe.delete(keys.GPU_LOST.format(uuid=uuid))
        pipe.hdel(keys.GPU_SIM.format(uuid=uuid), "xids")
        pipe.execute()

    def states(self, uuids: Sequence[str]) -> dict[str, SimulatedState]:
        """What was injected into each of ``uuids`` (an untouched GPU reads SimulatedState())."""
        if not uuids:
            return {}
        pipe = self._client.pipeline()
        pipe.mget([keys.GPU_LOST.format(uuid=u) for u in uuids])
        for uuid in uuids:
            pipe.hgetall(keys.GPU_SIM.format(uuid=uuid))
        lost, *sims = pipe.execute()
        found = zip(uuids, cast(list[str | None], lost), cast(list[dict[str, str]], sims), strict=True)
        return {
            uuid: SimulatedState(why, _ints(sim.get("xids", "")), next(iter(_ints(sim.get("foreign", ""))), 0))
            for uuid, why, sim in found
        }

    def set_driver(self, host: str, driver: str, cuda: str) -> None:
        """The driver (and the newest CUDA it supports) ``host``'s simulated GPUs read from now on."""
        self._client.hset(keys.SIM_DRIVER.format(host=host), mapping={"driver": driver, "cuda": cuda})

    def driver(self, host: str) -> tuple[str, str] | None:
        """(driver, CUDA) set by ``set_driver`` for ``host``; None when none was set."""
        fields = cast(dict[str, str], self._client.hgetall(keys.SIM_DRIVER.format(host=host)))
        if not fields.get("driver"):
            return None
        return fields["driver"], fields.get("cuda", "")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip().lstrip("-").isdigit())
