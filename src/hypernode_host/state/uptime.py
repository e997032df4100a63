"""Uptime (keys.UPTIME): the milliseconds the bridge was registered, per UTC hour, for the last 31 days.

The bridge credits each stretch between two beats (core/uptime.py splits it by hour); the hash
also keeps when the node was first seen and the registered total, which the heartbeat sends as
``total_uptime``. Hours older than KEEP_HOURS are dropped as new ones are written.
"""

from __future__ import annotations

from typing import cast

import redis

from hypernode_host.core.uptime import HOUR_MS, KEEP_HOURS, split_by_hour
from hypernode_host.state import keys

FIRST_SEEN = "first_seen"
TOTAL = "total_ms"


class UptimeRecord:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def seen(self, at_ms: int) -> None:
        """The node runs (kept once: the first time)."""
        self._client.hsetnx(keys.UPTIME, FIRST_SEEN, at_ms)

    def credit(self, start_ms: int, end_ms: int) -> None:
        """The bridge was registered from ``start_ms`` to ``end_ms``."""
        parts = split_by_hour(start_ms, end_ms)
        if not parts:
            return
        pipe = self._client.pipeline()
        pipe.hsetnx(keys.UPTIME, FIRST_SEEN, start_ms)
        for hour, ms in parts.items():
            pipe.hincrby(keys.UPTIME, str(hour), ms)
        pipe.hincrby(keys.UPTIME, TOTAL, end_ms - start_ms)
        pipe.execute()
        self._prune(end_ms)

    def _prune(self, now_ms: int) -> None:
        oldest = now_ms - now_ms % HOUR_MS - KEEP_HOURS * HOUR_MS
        stale = [f for f in cast(list[str], self._client.hkeys(keys.UPTIME)) if f.isdigit() and int(f) < oldest]
        if stale:
            self._client.hdel(keys.UPTIME, *stale)

    def read(self) -> tuple[dict[int, int], int | None, int]:
        """(registered ms per hour, first seen (epoch ms), registered total ms)."""
        fields = cast(dict[str, str], self._client.hgetall(keys.UPTIME))
        hours = {int(k): int(v) for k, v in fields.items() if k.isdigit() and v.isdigit()}
        first = fields.get(FIRST_SEEN, "")
        total = fields.get(TOTAL, "")
        return hours, int(first) if first.isdigit() else None, int(total) if total.isdigit() else 0
