"""Dead letters: jobs whose run raised, which Dramatiq moved to their queue's ``.XQ`` (the actor has
max_retries=0). An operator lists them, requeues them once the cause is fixed, or purges them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypernode_host.core.clock import now_ms
from hypernode_host.inspection import UnknownJob, dramatiq_key
from hypernode_host.jobs import JobState
from hypernode_host.state import Store, keys

if TYPE_CHECKING:  # signing is only needed to purge
    from hypernode_host.proofs import NodeKey

DROPPED_REASON = "dropped from the dead-letter queue by the node operator"

# Move one dead-lettered message back to its queue, as Dramatiq's own enqueue lays it out. A job
# whose run raised after claiming it still reads "running" on a slot that has let it go: it is
# queued again, so that whichever worker takes it may claim it (and reattach to its container).
_REQUEUE = """
local body = redis.call('HGET', KEYS[2], ARGV[1])
if not body then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], body)
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[5], 'state') == 'running' then
  redis.call('HSET', KEYS[5], 'state', 'queued')
  redis.call('SREM', KEYS[7], ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_id: str  # the message's id in Redis (Dramatiq's redis_message_id)
    job_id: str | None
    dead_at: int  # epoch ms
    enqueued_at: int | None
    state: JobState | None  # the job record's state now


def dead_letters(store: Store, queues: Sequence[str], limit: int = 1000) -> list[DeadLetter]:
    """Dead-lettered messages of ``queues``, newest first (at most ``limit`` per queue)."""
    pipe = store._client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrevrange(dramatiq_key(queue, ".XQ"), 0, limit - 1, withscores=True)
    listed = pipe.execute()
    pipe = store._client.pipeline(transaction=False)
    for queue, entries in zip(queues, listed, strict=True):
        for redis_id, _ in entries:
            pipe.hget(dramatiq_key(queue, ".XQ.msgs"), redis_id)
    bodies = iter(pipe.execute())
    found = []
    for queue, entries in zip(queues, listed, strict=True):
        for redis_id, score in entries:
            body = next(bodies)
            message = json.loads(body) if body else {}
            args = message.get("args") or [None]
            enqueued_at = int(message.get("message_timestamp") or 0) or None
            found.append(DeadLetter(queue, redis_id, args[0], int(score), enqueued_at, None))
    states = store.jobs.states(d.job_id for d in found if d.job_id)
    return [dataclasses.replace(d, state=states.get(d.job_id or "")) for d in found]


def requeue_dead(store: Store, queues: Sequence[str], job_id: str | None = None) -> list[str]:
    """Put dead-lettered messages back at the tail of their queue: one job's, or all (``job_id`` None).

    The worker that takes one runs it as any delivery: a finished job is not run again, and
    a job whose container still exists is reattached. UnknownJob when ``job_id`` is not dead.
    Only requeue a job once whatever made its run raise is fixed: it dead-letters again otherwise.
    """
    chosen = [d for d in dead_letters(store, queues) if job_id is None or d.job_id == job_id]
    if job_id is not None and not chosen:
        raise UnknownJob(f"no dead-lettered message for job {job_id!r}")
    move = store._client.register_script(_REQUEUE)
    moved = []
    for dead in chosen:
        touched = [
            dramatiq_key(dead.queue, ".XQ"),
            dramatiq_key(dead.queue, ".XQ.msgs"),
            dramatiq_key(dead.queue, ".msgs"),
            dramatiq_key(dead.queue),
            keys.JOB.format(job_id=dead.job_id or "-"),
            keys.QUEUED,
            keys.RUNNING,
        ]
        if move(keys=touched, args=[dead.redis_id, dead.job_id or ""]):
            moved.append(dead.job_id or dead.redis_id)
    return moved


def purge_dead(store: Store, queues: Sequence[str], key: NodeKey) -> list[str]:
    """Drop every dead-lettered message; each of their jobs still unfinished ends with an error result.

    The backend hears about every job it sent: a purged job gets a signed ``error`` result
    saying the operator dropped it, through the outbox like any other.
    """
    from hypernode_host.results import error_result

    dropped = []
    for dead in dead_letters(store, queues):
        pipe = store._client.pipeline()
        pipe.zrem(dramatiq_key(dead.queue, ".XQ"), dead.redis_id)
        pipe.hdel(dramatiq_key(dead.queue, ".XQ.msgs"), dead.redis_id)
        removed, _ = pipe.execute()
        if not removed:
            continue  # requeued or purged by someone else meanwhile
        dropped.append(dead.job_id or dead.redis_id)
        record = store.jobs.get(dead.job_id) if dead.job_id else None
        if record is not None and record.active:
            result = error_result(
                job_id=record.id,
                job=record.received_job(),
                node_id=store.node.node_id(),
                key=key,
                reason=DROPPED_REASON,
                at_ms=now_ms(),
            )
            store.jobs.finish(record.id, result.model_dump(mode="json"))
    return dropped
