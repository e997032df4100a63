"""The Dramatiq Redis broker, built explicitly from settings, and how the bridge enqueues a job."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import AgeLimit, Callbacks, CurrentMessage, Pipelines, Retries, ShutdownNotifications

from hypernode_host import constants as C
from hypernode_host.state import connect, keys

# A dead worker's in-flight message returns after this (Dramatiq's default is 60 s). Our own
# resume-at-start reattaches much sooner; this is the fallback for a slot nobody restarts.
HEARTBEAT_TIMEOUT_MS = 30_000
# Maintenance (which requeues a dead worker's messages) runs on ~5 % of commands instead of
# 0.1 %: on a small node the default means many minutes (research/peers.md 4.1).
MAINTENANCE_CHANCE = 50_000
# An enqueue pushes a token on its queue's wake list; an idle consumer of that queue waits on the list
# (BLPOP) instead of Dramatiq's backoff sleep, which grows to worker_timeout (1 s) and made a job
# wait ~0.3 s in Redis for an idle worker. Spare tokens only cost an idle consumer one empty fetch.
WAKE_TOKENS_MAX = 64


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer that never sleeps on a miss: it blocks until there is work or room.

    Idle (room to prefetch, nothing found): BLPOP the queue's wake list, up to the idle timeout.
    Full (prefetch reached): wait until ack or nack frees a place, so the next message is fetched
    the moment the running job ends rather than at the end of a backoff sleep.
    """

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._freed = threading.Event()

    def __next__(self) -> MessageProxy | None:
        if not self.message_cache:
            if self.outstanding_message_count >= self.prefetch:
                self._freed.wait(self.timeout / 1000)
                self._freed.clear()
                return None
            try:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
                if not self.message_cache:
                    self.broker.client.blpop([keys.WAKE.format(queue=self.queue_name)], timeout=self.timeout / 1000)
                    return None
            except redis.ConnectionError as exc:  # as Dramatiq's own consumer reports it: restarted in 1 s
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        found: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        return found

    def ack(self, message: MessageProxy) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self._freed.set()

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._freed.set()


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose enqueue wakes an idle consumer of the queue (see _WakingConsumer)."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        enqueued: dramatiq.Message[Any] = super().enqueue(message, delay=delay)
        key = keys.WAKE.format(queue=enqueued.queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
        pipe.execute()
        return enqueued


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
    broker = WakingRedisBroker(  # type: ignore[no-untyped-call]
        client=connect(redis_url, decode=False),  # Dramatiq reads its messages as bytes
        middleware=middleware,
        namespace=keys.DRAMATIQ_NAMESPACE,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    dramatiq.set_broker(broker)
    return broker


def enqueue_job(broker: RedisBroker, queue: str, job_id: str) -> None:
    """Put a job id on ``queue`` for the ``run_job`` actor (the record in Redis holds the job)."""
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue, actor_name=C.ACTOR_NAME, args=(job_id,), kwargs={}, options={}
    )
    broker.enqueue(message)
