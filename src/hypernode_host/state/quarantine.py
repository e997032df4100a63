"""The poison-job breaker's memory (keys.QUARANTINE): workloads whose GPU failed while they ran.

A workload is a job's image and the digest of its script (or command); while its key lives (the
HN_POISON_QUARANTINE setting, from the failure) this host's workers refuse it, so one job that
crashes GPUs does not crash every GPU of the node in turn. ``gpus --clear-quarantine`` deletes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from hypernode_host.state import keys


@dataclass(frozen=True)
class Quarantined:
    """One workload refused on a host, and why."""

    workload: str
    job_id: str  # the job during which the GPU failed
    gpu: str  # the GPU's UUID
    reason: str  # what the GPU reported
    at_ms: int
    ttl_s: int  # seconds left


class Quarantine:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def add(self, host: str, workload: str, *, job_id: str, gpu: str, reason: str, at_ms: int, ttl_s: int) -> None:
        value = json.dumps({"job_id": job_id, "gpu": gpu, "reason": reason, "at_ms": at_ms})
        self._client.set(keys.QUARANTINE.format(host=host, workload=workload), value, ex=max(int(ttl_s), 1))

    def get(self, host: str, workload: str) -> Quarantined | None:
        key = keys.QUARANTINE.format(host=host, workload=workload)
        pipe = self._client.pipeline()
        pipe.get(key)
        pipe.ttl(key)
        value, ttl = pipe.execute()
        return _parse(workload, cast(str | None, value), int(ttl))

    def all(self, host: str) -> list[Quarantined]:
        """Every workload quarantined on ``host``, oldest first."""
        found = [q for q in (self.get(host, w) for w in self._workloads(host)) if q is not None]
        return sorted(found, key=lambda q: q.at_ms)

    def clear(self, host: str) -> int:
        """Forget every workload quarantined on ``host``; how many there were."""
        names = [keys.QUARANTINE.format(host=host, workload=w) for w in self._workloads(host)]
        return int(self._client.delete(*names)) if names else 0

    def _workloads(self, host: str) -> Iterator[str]:
        prefix = keys.QUARANTINE.format(host=host, workload="")
        for key in self._client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=500):
            yield cast(str, key).removeprefix(prefix)


def _parse(workload: str, value: str | None, ttl: int) -> Quarantined | None:
    if value is None:
        return None
    try:
        fields: dict[str, Any] = json.loads(value)
        return Quarantined(
            workload,
            str(fields["job_id"]),
            str(fields["gpu"]),
            str(fields["reason"]),
            int(fields["at_ms"]),
            max(ttl, 0),
        )
    except (ValueError, KeyError, TypeError):
        return None
