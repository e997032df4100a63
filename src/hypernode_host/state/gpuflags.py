"""Simulated GPU faults (keys.GPU_LOST): simulated GPUs have no driver to fail, so one is lost on purpose.

``SET hn:gpu-lost:<uuid> "<reason>"`` marks it lost and ``DEL`` heals it (a test or an operator does
this). Only simulated GPUs read these keys; a real GPU's health comes from NVML alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from hypernode_host.state import keys


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
