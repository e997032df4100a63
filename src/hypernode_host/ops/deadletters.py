"""Dead letters: jobs whose run raised, which Dramatiq moved to their queue's dead-letter set (the actor
has max_retries=0). An operator lists them, requeues them once the cause is fixed, or purges them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import JobState, Reason
from hypernode_host.errors import UnknownJob
from hypernode_host.state import Store
from hypernode_host.tasks.dramatiq_redis import DeadMessage, Queues

if TYPE_CHECKING:  # signing is only needed to purge
    from hypernode_host.core.proofs import NodeKey

DROPPED_REASON = "dropped from the dead-letter queue by the node operator"


@dataclass(frozen=True)
class DeadLetter(DeadMessage):
    state: JobState | None = None  # the job record's state now


def dead_letters(store: Store, queues: Queues, names: Sequence[str], limit: int = 1000) -> list[DeadLetter]:
    """Dead-lettered messages of the queues ``names``, newest first (at most ``limit`` per queue)."""
    found = queues.dead(names, limit)
    states = store.jobs.states(d.job_id for d in found if d.job_id)
    return [
        DeadLetter(d.queue, d.redis_id, d.job_id, d.dead_at, d.enqueued_at, states.get(d.job_id or "")) for d in found
    ]


def requeue_dead(store: Store, queues: Queues, names: Sequence[str], job_id: str | None = None) -> list[str]:
    """Put dead-lettered messages back at the tail of their queue: one job's, or all (``job_id`` None).

    The worker that takes one runs it as any delivery: a finished job is not run again, and
    a job whose container still exists is reattached. UnknownJob when ``job_id`` is not dead.
    Only requeue a job once whatever made its run raise is fixed: it dead-letters again otherwise.
    """
    chosen = [d for d in queues.dead(names) if job_id is None or d.job_id == job_id]
    if job_id is not None and not chosen:
        raise UnknownJob(f"no dead-lettered message for job {job_id!r}")
    return [dead.job_id or dead.redis_id for dead in chosen if queues.requeue(dead)]


def purge_dead(store: Store, queues: Queues, names: Sequence[str], key: NodeKey) -> list[str]:
    """Drop every dead-lettered message; each of their jobs still unfinished ends with an error result.

    The backend hears about every job it sent: a purged job gets a signed ``error`` result
    saying the operator dropped it, through the outbox like any other.
    """
    from hypernode_host.core.results import error_result

    dropped = []
    for dead in queues.dead(names):
        # The result is stored before the message goes: a purge cut short leaves the job dead-lettered,
        # never dropped without its result.
        record = store.jobs.get(dead.job_id) if dead.job_id else None
        if record is not None and record.active:
            result = error_result(
                job_id=record.id,
                job=record.received_job(),
                node_id=store.node.node_id(),
                key=key,
                reason=Reason.OPERATOR_DROPPED,
                detail=DROPPED_REASON,
                at_ms=now_ms(),
            )
            store.jobs.finish(record.id, result.model_dump(mode="json"))
        if queues.drop(dead):  # False: requeued or purged by someone else meanwhile
            dropped.append(dead.job_id or dead.redis_id)
    return dropped
