"""The outbox (keys.REPLY_STREAM): a result stays there until the backend acknowledges it.

Settled (acknowledged or rejected), it leaves the stream, so the outbox holds unsettled results only,
and the job enters keys.SETTLED, where retention (state/jobs.py ``compact``) finds it later.

A finished job's result is added atomically with its record (jobs.finish), so a bridge killed at
any moment resends it after restart.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import JobState
from hypernode_host.state import keys, scripts
from hypernode_host.state.records import OutboxEntry

BATCH = 100


def _entries(rows: list[tuple[str, dict[str, str]]]) -> list[OutboxEntry]:
    return [OutboxEntry(entry_id, f["job_id"], json.loads(f["result"])) for entry_id, f in rows]


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._settle_script = scripts.register(client, "settle")

    def entries(self, after: str = "-", count: int = BATCH) -> list[OutboxEntry]:
        """Results waiting for an ack, oldest first, strictly after entry id ``after``."""
        start = "-" if after == "-" else f"({after}"
        return _entries(
            cast(list[tuple[str, dict[str, str]]], self._client.xrange(keys.REPLY_STREAM, start, "+", count))
        )

    def wait(self, after: str, block_ms: int) -> list[OutboxEntry]:
        """Block up to ``block_ms`` for results newer than ``after``."""
        reply = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
            self._client.xread({keys.REPLY_STREAM: after}, count=BATCH, block=block_ms),
        )
        return _entries(reply[0][1]) if reply else []

    def last_id(self) -> str:
        newest = cast(list[tuple[str, Any]], self._client.xrevrange(keys.REPLY_STREAM, "+", "-", count=1))
        return newest[0][0] if newest else "0-0"

    def size(self) -> int:
        return int(self._client.xlen(keys.REPLY_STREAM))

    def acknowledge(self, entry_id: str, job_id: str, at_ms: int | None = None) -> bool:
        """The backend has the result: drop it from the outbox, the job is reported (and its retention
        starts: keys.SETTLED). False when the job was settled already (a second copy of the ack)."""
        return self._settle(entry_id, job_id, JobState.REPORTED, now_ms() if at_ms is None else at_ms, "")

    def reject(self, entry_id: str, job_id: str, reason: str, at_ms: int) -> bool:
        """The backend refused the result (``reason``, its text): it leaves the outbox, so it is never sent
        again, and stays in the job's record, rejected, for the operator. False when already settled."""
        return self._settle(entry_id, job_id, JobState.REJECTED, at_ms, reason)

    def _settle(self, entry_id: str, job_id: str, state: JobState, at_ms: int, rejection: str) -> bool:
        touched = [keys.JOB.format(job_id=job_id), keys.REPLY_STREAM, keys.SETTLED, keys.NODE]
        return bool(self._settle_script(keys=touched, args=[entry_id, job_id, state.value, at_ms, rejection]))
