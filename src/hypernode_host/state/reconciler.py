"""The reconciler's turn and its counters (keys.RECONCILER_LOCK, keys.RECONCILER); tasks/reconcile.py
runs it, and retention with it.

Every worker of every host sharing the Redis offers to reconcile every few seconds; the lock, a
string with a TTL shorter than that period, lets one of them through per period. The counters are
what the metrics show: passes, jobs requeued and finished, records compacted and forgotten, when the
last pass ran and how long it took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from hypernode_host.state import keys


@dataclass(frozen=True)
class ReconcilerStats:
    passes: int = 0
    requeued: int = 0  # jobs given a new message: queued or running with none, nobody holding them
    finished: int = 0  # jobs ended instead (a refusal whose result was never stored)
    compacted: int = 0  # settled records shrunk to tombstones (retention)
    forgotten: int = 0  # tombstones removed
    last_at: int | None = None  # epoch ms of the last pass
    last_ms: int = 0  # how long it took
    last_candidates: int = 0  # queued or running jobs it looked at closely


class Reconciler:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def take_turn(self, owner: str, ttl_ms: int) -> bool:
        """True when ``owner`` may run the next pass (no pass has run for ``ttl_ms``)."""
        return bool(self._client.set(keys.RECONCILER_LOCK, owner, nx=True, px=ttl_ms))

    def record(self, at_ms: int, took_ms: int, candidates: int, **counts: int) -> None:
        """A pass ran at ``at_ms`` for ``took_ms``: ``counts`` adds to requeued, finished, compacted, forgotten."""
        pipe = self._client.pipeline()
        pipe.hincrby(keys.RECONCILER, "passes", 1)
        for name, count in counts.items():
            pipe.hincrby(keys.RECONCILER, name, count)
        pipe.hset(keys.RECONCILER, mapping={"last_at": at_ms, "last_ms": took_ms, "last_candidates": candidates})
        pipe.execute()

    def stats(self) -> ReconcilerStats:
        raw = cast(dict[str, str], self._client.hgetall(keys.RECONCILER))
        number = {k: int(float(v)) for k, v in raw.items()}
        return ReconcilerStats(
            passes=number.get("passes", 0),
            requeued=number.get("requeued", 0),
            finished=number.get("finished", 0),
            compacted=number.get("compacted", 0),
            forgotten=number.get("forgotten", 0),
            last_at=number.get("last_at"),
            last_ms=number.get("last_ms", 0),
            last_candidates=number.get("last_candidates", 0),
        )
