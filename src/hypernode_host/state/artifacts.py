"""Output files of finished jobs (keys.ARTIFACTS), kept for `hypernode-host artifacts` and the backend.

Bytes go in base64 (every client of ours decodes replies as text); a job's files are at most
HN_MAX_OUTPUT_BYTES, and the whole hash expires with the retention below.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import redis

from hypernode_host.state import keys

RETENTION_S = 7 * 24 * 3600  # how long a finished job's files stay on the node


class Artifacts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def keep(self, job_id: str, files: Mapping[str, bytes]) -> None:
        """Keep ``files`` (path → bytes) for ``job_id``, replacing what an earlier attempt kept."""
        key = keys.ARTIFACTS.format(job_id=job_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        if files:
            pipe.hset(key, mapping={path: base64.b64encode(data).decode() for path, data in files.items()})
            pipe.expire(key, RETENTION_S)
        pipe.execute()

    def files(self, job_id: str) -> dict[str, bytes]:
        """The files kept for ``job_id`` (empty when none are, or their retention ended)."""
        found = self._client.hgetall(keys.ARTIFACTS.format(job_id=job_id))
        return {str(path): base64.b64decode(value) for path, value in found.items()}
