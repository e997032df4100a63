"""GPU leases in Redis: two workers, on this host or another, never hold the same GPU.

A worker takes a lease on each GPU of its slot at start (all or none, atomically), refreshes
them while it lives and releases them when it stops; a lease left by a dead worker expires
after its TTL. A lease held by someone else is refused loudly.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from typing import cast

import redis

from hypernode_host import constants as C
from hypernode_host import pidns
from hypernode_host.errors import GpuError

LEASE_KEY = C.PREFIX + ":gpu-lease:{uuid}"

_ACQUIRE = """
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] and holder ~= ARGV[3] then return {i, holder} end
end
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return {0, ''}
"""

_REFRESH = """
local lost = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('EXPIRE', key, ARGV[2]) else lost = lost + 1 end
end
return lost
"""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""


def owner_id(slot: int) -> str:
    """Who holds a lease: host, slot, process and its pid namespace, readable in `hypernode-host workers`."""
    return f"{socket.gethostname()}/slot-{slot}/pid-{os.getpid()}/ns-{pidns.current()}/{secrets.token_hex(3)}"


def _dead_here(holder: str) -> bool:
    """True when ``holder`` names a process of our pid namespace that no longer exists (a lease of another
    host or container, or of an owner id without a namespace, is left to its TTL)."""
    parts = dict(p.split("-", 1) for p in holder.split("/") if p.startswith(("pid-", "ns-")))
    pid = parts.get("pid", "")
    return pid.isdigit() and pidns.exited(parts.get("ns", ""), int(pid))


class GpuLeases:
    def __init__(self, client: redis.Redis, uuids: Sequence[str], owner: str, ttl_s: int) -> None:
        self.client = client
        self.uuids = list(uuids)
        self.owner = owner
        self.ttl_s = ttl_s
        self._keys = [LEASE_KEY.format(uuid=u) for u in self.uuids]

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
            index, holder = cast(
                list[int | str],
                self.client.eval(_ACQUIRE, len(self._keys), *self._keys, self.owner, self.ttl_s, stale),
            )
            if not int(index):
                return
            if not _dead_here(str(holder)):
                break
            stale = str(holder)
        uuid = self.uuids[int(index) - 1]
        raise GpuError(f"GPU {uuid} is already held by worker {holder!s}; refusing to start a second worker on it")

    def refresh(self) -> bool:
        """Extend the leases; False if any was lost (expired and taken, or deleted)."""
        if not self._keys:
            return True
        return int(cast(int, self.client.eval(_REFRESH, len(self._keys), *self._keys, self.owner, self.ttl_s))) == 0

    def release(self) -> None:
        if self._keys:
            self.client.eval(_RELEASE, len(self._keys), *self._keys, self.owner)

    def holders(self) -> dict[str, str | None]:
        """Who holds each GPU now (None: free)."""
        return {u: cast(str | None, self.client.get(k)) for u, k in zip(self.uuids, self._keys, strict=True)}
