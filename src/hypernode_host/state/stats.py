"""The node's counters (keys.STATS, keys.STATUS_COUNTS) and job duration histogram (keys.DURATIONS).

jobs.finish updates them atomically with the result; these are the reads.
"""

from __future__ import annotations

import math
from typing import cast

import redis

from hypernode_host.state import keys
from hypernode_host.state.records import DurationStats

# Upper bounds (seconds) of the job duration histogram: jobs run from seconds to a day.
DURATION_BUCKETS_S: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400,
)  # fmt: skip


def bucket_bound(value: float) -> str:
    """A bucket bound as finish.lua compares and names it (60.0 -> "60", inf -> "+Inf")."""
    return "+Inf" if math.isinf(value) else format(value, "g")


class Stats:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def _counts(self, key: str) -> dict[str, int]:
        return {k: int(v) for k, v in cast(dict[str, str], self._client.hgetall(key)).items()}

    def counters(self) -> dict[str, int]:
        """Jobs finished: completed, failed (every other final status counts as failed)."""
        return self._counts(keys.STATS)

    def status_counts(self) -> dict[str, int]:
        """Finished jobs by final status (completed, failed, timeout, cancelled, error)."""
        return self._counts(keys.STATUS_COUNTS)

    def reason_counts(self) -> dict[str, int]:
        """Finished jobs that did not complete, by reason (core/jobs.py Reason)."""
        return self._counts(keys.REASON_COUNTS)

    def durations(self) -> dict[str, DurationStats]:
        """The job duration histogram of each final status, with cumulative bucket counts."""
        raw = cast(dict[str, str], self._client.hgetall(keys.DURATIONS))
        result = {}
        for status in sorted({field.partition("|")[0] for field in raw}):
            running = 0
            buckets = []
            for bound in (*DURATION_BUCKETS_S, float("inf")):
                running += int(raw.get(f"{status}|{bucket_bound(bound)}", 0))
                buckets.append((bucket_bound(bound), running))
            result[status] = DurationStats(
                buckets=buckets, sum_s=float(raw.get(f"{status}|sum", 0)), count=int(raw.get(f"{status}|count", 0))
            )
        return result
