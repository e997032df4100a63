"""The node's hash (keys.NODE): its node id, when it registered and last heartbeat, the bridge's counters."""

from __future__ import annotations

import secrets
from typing import cast

import redis

from hypernode_host.state import keys
from hypernode_host.state.records import NodeRecord


class Node:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def get(self) -> NodeRecord:
        return NodeRecord.parse(cast(dict[str, str], self._client.hgetall(keys.NODE)))

    def identity(self) -> str:
        """This node's own name for itself on a Docker engine (12 hex digits), made by the first who asks.

        Every container and volume a worker makes carries it, in its name and its labels, and no
        worker touches one that carries another: two nodes (two Redis) sharing an engine never see
        each other's jobs. It lives as long as the node's Redis, as the jobs it tells apart do.
        """
        self._client.hsetnx(keys.NODE, "identity", secrets.token_hex(6))
        return cast(str, self._client.hget(keys.NODE, "identity"))

    def node_id(self) -> str | None:
        return cast(str | None, self._client.hget(keys.NODE, "node_id"))

    def registered(self, node_id: str, at_ms: int) -> None:
        pipe = self._client.pipeline()
        pipe.hset(keys.NODE, mapping={"node_id": node_id, "registered_at": at_ms})
        pipe.hdel(keys.NODE, "refused", "refused_at")
        pipe.execute()

    def refused(self, reason: str, at_ms: int) -> None:
        """The backend refuses the token (its text): what `check` and `top` tell the operator."""
        self._client.hset(keys.NODE, mapping={"refused": reason, "refused_at": at_ms})

    def clear_refusal(self) -> None:
        """A bridge starting with (maybe) another token: an earlier refusal no longer holds."""
        self._client.hdel(keys.NODE, "refused", "refused_at")

    def heartbeat(self, at_ms: int) -> None:
        self._client.hset(keys.NODE, "heartbeat_at", at_ms)

    def count(self, name: str, by: int = 1) -> int:
        """Bump a counter of the node's own (reconnects, frames_refused, results_rejected)."""
        return int(self._client.hincrby(keys.NODE, name, by))
