"""The Store: typed access to everything the agent keeps in one Redis, over one client.

Each part owns its keys (state/keys.py names them all): ``jobs`` the job records and their
indexes, ``outbox`` the results waiting for the backend's ack, ``node`` the bridge's view of its
connection, ``registry`` the live workers, ``cancels`` the cancel flags, ``stats`` the counters
and durations, ``gpuflags`` the simulated GPU faults, ``reconciler`` the reconciler's turn and its
counters, ``events`` the node's events for the notifier, ``uptime`` the registered time per hour,
``quarantine`` the workloads refused after their GPU failed, ``images`` the image cache's LRU and pull
phases, and ``leases(...)`` the GPU leases. The client itself stays inside: nothing outside state/ talks
to Redis directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from hypernode_host.settings import Settings
from hypernode_host.state.artifacts import Artifacts
from hypernode_host.state.cancels import Cancels
from hypernode_host.state.connect import connect, redis_url
from hypernode_host.state.events import Events
from hypernode_host.state.gpuflags import GpuFlags
from hypernode_host.state.imagecache import ImageUse
from hypernode_host.state.jobs import Jobs
from hypernode_host.state.leases import GpuLeases
from hypernode_host.state.node import Node
from hypernode_host.state.outbox import Outbox
from hypernode_host.state.quarantine import Quarantine
from hypernode_host.state.reconciler import Reconciler
from hypernode_host.state.registry import Registry
from hypernode_host.state.stats import Stats
from hypernode_host.state.uptime import UptimeRecord


@dataclass(frozen=True)
class ServerConfig:
    """The two settings of the Redis server that decide whether it can lose jobs."""

    appendonly: str | None
    maxmemory_policy: str | None


class Store:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.jobs = Jobs(client)
        self.outbox = Outbox(client)
        self.node = Node(client)
        self.registry = Registry(client)
        self.cancels = Cancels(client)
        self.stats = Stats(client)
        self.gpuflags = GpuFlags(client)
        self.artifacts = Artifacts(client)
        self.reconciler = Reconciler(client)
        self.quarantine = Quarantine(client)
        self.images = ImageUse(client)
        self.events = Events(client)
        self.uptime = UptimeRecord(client)

    @classmethod
    def open(cls, settings: Settings, *, timeout_s: float | None = None) -> Store:
        """The node's Redis (state.connect.redis_url); with ``timeout_s`` every command gives up after it."""
        return cls.from_url(redis_url(settings), timeout_s=timeout_s)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float | None = None) -> Store:
        return cls(connect(url, timeout_s=timeout_s))

    def leases(self, uuids: Sequence[str], owner: str, ttl_s: int) -> GpuLeases:
        """The leases on ``uuids`` that ``owner`` takes, refreshes and releases."""
        return GpuLeases(self._client, uuids, owner, ttl_s)

    def ping(self) -> None:
        """Nothing when Redis answers; the RedisError otherwise."""
        self._client.ping()

    def server_config(self) -> ServerConfig:
        """appendonly and maxmemory-policy; RedisRefused where the server refuses CONFIG (managed Redis)."""
        appendonly = cast(dict[str, str], self._client.config_get("appendonly")).get("appendonly")
        policy = cast(dict[str, str], self._client.config_get("maxmemory-policy")).get("maxmemory-policy")
        return ServerConfig(appendonly, policy)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
