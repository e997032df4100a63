"""Cancel flags (keys.CANCEL): set by the bridge or an operator, read by the job's worker between waits."""

from __future__ import annotations

import redis

from hypernode_host.state import keys

FLAG_TTL_S = 7 * 24 * 3600  # longer than any job may wait and run; then the flag cleans itself up


class Cancels:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def request(self, job_id: str) -> None:
        self._client.set(keys.CANCEL.format(job_id=job_id), "1", ex=FLAG_TTL_S)

    def requested(self, job_id: str) -> bool:
        return bool(self._client.exists(keys.CANCEL.format(job_id=job_id)))
