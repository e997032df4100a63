"""The Dramatiq Redis broker, built explicitly from settings, and how the bridge enqueues a job."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Pipelines, Retries, ShutdownNotifications

from hypernode_host.tasks.dramatiq_redis import waking_broker

ACTOR_NAME = "run_job"
# A dead worker's in-flight message returns after this (Dramatiq's default is 60 s). Our own
# resume-at-start reattaches much sooner; this is the fallback for a slot nobody restarts.
HEARTBEAT_TIMEOUT_MS = 30_000
# Maintenance (which requeues a dead worker's messages) runs on ~5 % of commands instead of
# Dramatiq's 0.1 %: with the few commands a small node sends, the default means many minutes.
MAINTENANCE_CHANCE = 50_000


def build_broker(redis_url: str) -> RedisBroker:
    """A RedisBroker with the middleware we rely on; also made Dramatiq's global broker.

    TimeLimit is left out on purpose: it cannot interrupt a blocking Docker call and would
    kill hour-long jobs at its 10-minute default; the runner enforces deadlines itself.
    """
    middleware = [
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=0),
        CurrentMessage(),
    ]
    broker = waking_broker(
        redis_url,
        middleware=middleware,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    dramatiq.set_broker(broker)
    return broker


def job_message(queue: str, job_id: str, redis_id: str | None = None) -> dramatiq.Message[None]:
    """The ``run_job`` message for a job id (the record in Redis holds the job); with ``redis_id``,
    as Dramatiq's enqueue would store it (its id in Redis, which each enqueue makes anew)."""
    options = {} if redis_id is None else {"redis_message_id": redis_id}
    return dramatiq.Message(queue_name=queue, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options=options)


def enqueue_job(broker: RedisBroker, queue: str, job_id: str) -> None:
    """Put a job id on ``queue`` for the ``run_job`` actor (the record in Redis holds the job)."""
    broker.enqueue(job_message(queue, job_id))
