"""The reconciler: no job waits forever for a message that no longer exists.

The invariant it keeps: **every queued or running job has a message in its queue (ready, fetched
by a worker and not yet acknowledged, delayed or dead-lettered), or a live holder, or a container
on its holder's host; within a few seconds of losing all three, it gets a new message.**

What usually keeps it without the reconciler: the bridge enqueues every job it records (and
completes an intake cut short when it starts), a worker's consumer puts back what its broker
fetched and does not hold (tasks/dramatiq_redis.py), Dramatiq requeues a dead broker's messages,
and a slot's restarted worker resumes its running jobs. What it is for: the rest. A Redis that
lost its last second of writes when it restarted (AOF ``everysec``), a message dropped by an
operator, a bug. A job found with none of the three is requeued (the claim, state/lua/claim.lua,
makes a duplicate message harmless: a job runs on one live slot at a time and never after its
result is stored), or, for a job refused at intake whose error result was never stored, finished
with that result.

Where it runs: in every worker, every RECONCILE_EVERY_S, and a lock in Redis (state/reconciler.py)
lets one pass through per period for all the workers of all the hosts sharing that Redis. A
worker has what a pass needs, Redis, the Docker engine it looks for containers in and the node
key a refusal is signed with; it runs whether or not the bridge is connected, and under `up` as
under compose (where the bridge may have no Docker socket and `up`'s supervisor does not exist).

A pass costs three pipelined round trips when nothing is queued or running; otherwise, when some
job is old enough to be suspect, one MULTI reading the messages of the queues those jobs are on.

Each pass also applies retention (state/jobs.py): settled records older than HN_JOB_RETENTION
shrink to tombstones, tombstones older than HN_TOMBSTONE_RETENTION go; a few hundred per call,
repeated while there are more, so a backlog drains within a few passes without a long one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import JobState
from hypernode_host.errors import ContainerError
from hypernode_host.state import Store
from hypernode_host.state.jobs import RETENTION_BATCH
from hypernode_host.state.records import JobRecord
from hypernode_host.tasks.broker import job_message
from hypernode_host.tasks.dramatiq_redis import Queues, RestoredJob

log = logging.getLogger(__name__)

RECONCILE_EVERY_S = 5.0
RETENTION_CALLS = 10  # at most this many batches of compaction (and of forgetting) per pass
# A job younger than this may still be between its record and its message (the bridge's intake).
GRACE_MS = 10_000


@dataclass(frozen=True)
class Pass:
    candidates: int  # queued or running jobs old enough and with no live holder
    requeued: list[str]
    finished: list[str]
    compacted: int = 0
    forgotten: int = 0


class Reconciler:
    """One pass at a time: ``run`` when it is this process's turn (``due``)."""

    def __init__(
        self,
        store: Store,
        queues: Queues,
        node_name: str,
        has_container: Callable[[str], bool],
        refuse: Callable[[JobRecord], bool],
        retention_s: int,
        tombstone_retention_s: int,
    ) -> None:
        self.store = store
        self.queues = queues
        self.node_name = node_name
        self.has_container = has_container  # is there a container of this job on this host
        self.refuse = refuse  # store the error result of a job refused at intake; False if it was stored
        self.retention_ms = retention_s * 1000
        self.tombstone_ms = tombstone_retention_s * 1000
        self.owner = f"{node_name}:{uuid.uuid4()}"

    def due(self) -> bool:
        """Whether this process runs the pass of this period (one process does, of all sharing the Redis)."""
        return self.store.reconciler.take_turn(self.owner, int(RECONCILE_EVERY_S * 1000 * 0.8))

    def run(self) -> Pass:
        started = time.monotonic()
        at = now_ms()
        suspects = [record for record, alive in self.store.jobs.active() if self._suspect(record, alive, at)]
        requeued: list[str] = []
        finished: list[str] = []
        if suspects:
            with_message = self.queues.jobs_with_messages(sorted({r.queue for r in suspects if r.queue}))
            for record in suspects:
                if record.id in with_message:
                    continue
                if not record.queue:
                    if self.refuse(record):
                        log.warning("job %s: refused at intake, its result never stored; stored now", record.id)
                        finished.append(record.id)
                elif self._restore(record):
                    log.warning("job %s: %s with no message and nobody holding it; requeued", record.id, record.state)
                    requeued.append(record.id)
        compacted = self._repeat(lambda: self.store.jobs.compact(at - self.retention_ms, at))
        forgotten = self._repeat(lambda: self.store.jobs.forget(at - self.tombstone_ms))
        took = int((time.monotonic() - started) * 1000)
        counts = {"requeued": len(requeued), "finished": len(finished), "compacted": compacted, "forgotten": forgotten}
        self.store.reconciler.record(at, took, len(suspects), **counts)
        return Pass(len(suspects), requeued, finished, compacted, forgotten)

    @staticmethod
    def _repeat(batch: Callable[[], int]) -> int:
        done = 0
        for _ in range(RETENTION_CALLS):
            count = batch()
            done += count
            if count < RETENTION_BATCH:
                break
        return done

    def _suspect(self, record: JobRecord, holder_alive: bool, at: int) -> bool:
        if record.state is JobState.QUEUED:
            return at - record.received_at >= GRACE_MS
        if holder_alive:
            return False
        if record.host == self.node_name:
            try:
                return not self.has_container(record.id)  # its slot's next worker resumes it
            except ContainerError:
                return False  # the engine cannot say: leave it for a pass that can
        return True

    def _restore(self, record: JobRecord) -> bool:
        state = record.state.value if record.state else ""
        slot = "" if record.slot is None else str(record.slot)
        job = RestoredJob(record.id, record.queue, state, record.host or "", slot)
        return self.queues.restore(job, job_message(record.queue, record.id, str(uuid.uuid4())))
