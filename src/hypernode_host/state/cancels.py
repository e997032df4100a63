"""Cancel flags (keys.CANCEL): set by the bridge or an operator, read by the job's worker between waits.

A flag exists only for a job this node has and has not finished (state/lua/cancel.lua decides that
atomically): a backend sending cancels for ids it never sent leaves no key behind, however many.
"""

from __future__ import annotations

import redis

from hypernode_host.state import keys, scripts

FLAG_TTL_S = 7 * 24 * 3600  # longer than any job may wait and run; then the flag cleans itself up


class Cancels:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._request = scripts.register(client, "cancel")

    def request(self, job_id: str) -> bool:
        """Flag the job for cancelling; False (nothing written) when it is unknown or already finished."""
        job, flag = keys.JOB.format(job_id=job_id), keys.CANCEL.format(job_id=job_id)
        return bool(self._request(keys=[job, flag], args=[FLAG_TTL_S]))

    def requested(self, job_id: str) -> bool:
        return bool(self._client.exists(keys.CANCEL.format(job_id=job_id)))
