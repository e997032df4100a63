"""GPU leases in Redis: two workers, on this host or another, never hold the same GPU.

A worker takes a lease on each GPU of its slot at start (all or none, atomically), refreshes
them while it lives and releases them when it stops; a lease left by a dead worker expires
after its TTL. A lease held by someone else is refused loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from hypernode_host.errors import GpuError
from hypernode_host.state import keys, scripts
from hypernode_host.state.holders import owner_exited


class GpuLeases:
    def __init__(self, client: redis.Redis, uuids: Sequence[str], owner: str, ttl_s: int) -> None:
        self._client = client
        self.uuids = list(uuids)
        self.owner = owner
        self.ttl_s = ttl_s
        self._keys = [keys.GPU_LEASE.format(uuid=u) for u in self.uuids]
        self._acquire = scripts.register(client, "lease_acquire")
        self._refresh = scripts.register(client, "lease_refresh")
        self._release = scripts.register(client, "lease_release")

    def acquire(self) -> None:
        """Take every lease or none; GpuError naming the holder when a live worker holds one.

        A lease left by a dead process of our pid namespace (a worker killed with SIGKILL, which
        `up` restarts) is taken over at once instead of after its TTL, so the slot resumes in
        seconds; one of another container or host is free only once its TTL has run out.
        """
        if not self._keys:
            return
        stale = ""
        for _ in range(len(self._keys) + 1):
            index, holder = cast(list[int | str], self._acquire(keys=self._keys, args=[self.owner, self.ttl_s, stale]))
            if not int(index):
                return
            if not owner_exited(str(holder)):
                break
            stale = str(holder)
        uuid = self.uuids[int(index) - 1]
        raise GpuError(f"GPU {uuid} is already held by worker {holder!s}; refusing to start a second worker on it")

    def refresh(self) -> bool:
        """Extend the leases; False if any was lost (expired and taken, or deleted)."""
        if not self._keys:
            return True
        return int(cast(int, self._refresh(keys=self._keys, args=[self.owner, self.ttl_s]))) == 0

    def release(self) -> None:
        if self._keys:
            self._release(keys=self._keys, args=[self.owner])

    def holders(self) -> dict[str, str | None]:
        """Who holds each GPU now (None: free)."""
        held = cast(list[str | None], self._client.mget(self._keys)) if self._keys else []
        return dict(zip(self.uuids, held, strict=True))
