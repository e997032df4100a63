"""Everything that knows Dramatiq's RedisBroker from the inside: its key layout and its private consumer.

Dramatiq keeps, under its namespace (keys.DRAMATIQ_NAMESPACE), per queue (brokers/redis/dispatch.lua):

- ``<ns>:<queue>``: list of the ids of ready messages, oldest first;
- ``<ns>:<queue>.msgs``: hash, message id -> message (ready and fetched ones);
- ``<ns>:<queue>.DQ`` and ``.DQ.msgs``: the same for delayed messages;
- ``<ns>:<queue>.XQ``: zset of dead-lettered message ids, scored by when they died (ms), and
  ``.XQ.msgs`` their messages;
- ``<ns>:__acks__.<broker id>.<queue>``: set of the ids a consumer process fetched and has not acked;
- ``<ns>:__heartbeats__``: zset of broker ids by the time of their last command.

A Dramatiq upgrade that changes any of it fails tests/integration/test_dramatiq_layout.py first.
The reads here cost a few pipelined round trips whatever the length of the queues.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed

from hypernode_host.core.clock import now_ms
from hypernode_host.settings import Settings
from hypernode_host.state import connect, keys, redis_url, scripts

NAMESPACE = keys.DRAMATIQ_NAMESPACE
HEARTBEATS = f"{NAMESPACE}:__heartbeats__"
# An enqueue pushes a token on its queue's wake list (keys.WAKE); spare tokens only cost an idle
# consumer one empty fetch, and the list is trimmed to this many.
WAKE_TOKENS_MAX = 64


def queue_key(queue: str, suffix: str = "") -> str:
    """A key of ``queue`` in Dramatiq's layout: "" (ready ids), ".msgs", ".DQ", ".DQ.msgs", ".XQ", ".XQ.msgs"."""
    return f"{NAMESPACE}:{queue}{suffix}"


def acks_key(broker_id: str, queue: str) -> str:
    """The messages of ``queue`` that the consumers of broker ``broker_id`` fetched and have not acked."""
    return f"{NAMESPACE}:__acks__.{broker_id}.{queue}"


# The waking broker ------------------------------------------------------------------------------


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer that never sleeps on a miss: it blocks until there is work or room.

    Idle (room to prefetch, nothing found): BLPOP the queue's wake list, up to the idle timeout,
    instead of Dramatiq's backoff sleep, which grows to worker_timeout (1 s) and made a job wait
    ~0.3 s in Redis for an idle worker. Full (prefetch reached): wait until ack or nack frees a
    place, so the next message is fetched the moment the running job ends.
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
    """A RedisBroker whose enqueue wakes an idle consumer of the queue (see WakingConsumer)."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return WakingConsumer

    def close(self) -> None:
        super().close()
        self.client.close()  # RedisBroker.close() leaves its connection pool open

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        enqueued: dramatiq.Message[Any] = super().enqueue(message, delay=delay)
        key = keys.WAKE.format(queue=enqueued.queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
        pipe.execute()
        return enqueued


def waking_broker(url: str, **options: Any) -> WakingRedisBroker:
    """A WakingRedisBroker on the Redis at ``url``, in our namespace, with Dramatiq's ``options``."""
    client = connect(url, decode=False)  # Dramatiq reads its messages as bytes
    return WakingRedisBroker(client=client, namespace=NAMESPACE, **options)  # type: ignore[no-untyped-call]


# Reading and repairing the queues ---------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    queue: str
    ready: int  # waiting for a worker
    delayed: int
    in_flight: int  # fetched by a worker, not yet acknowledged
    dead: int  # dead-lettered (the actor raised)
    oldest_age_s: float | None  # age of the message at the head of the queue


@dataclass(frozen=True)
class DeadMessage:
    queue: str
    redis_id: str  # the message's id in Redis (Dramatiq's redis_message_id)
    job_id: str | None  # its first argument: the run_job actor's job id
    dead_at: int  # epoch ms
    enqueued_at: int | None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _message(body: str | None) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Queues:
    """Dramatiq's queues as an operator sees them: counts, dead letters, and moving those back."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._requeue = scripts.register(client, "requeue_dead", package="hypernode_host.tasks")

    @classmethod
    def open(cls, settings: Settings, *, timeout_s: float | None = None) -> Queues:
        return cls(connect(redis_url(settings), timeout_s=timeout_s))

    def close(self) -> None:
        self._client.close()

    def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Counts per queue in two pipelined round trips, however long the queues are."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zrange(HEARTBEATS, 0, -1)
        for queue in queues:
            pipe.llen(queue_key(queue))
            pipe.hlen(queue_key(queue, ".DQ.msgs"))
            pipe.zcard(queue_key(queue, ".XQ"))
            pipe.lindex(queue_key(queue), 0)
        brokers, *rest = pipe.execute()
        per_queue = [rest[i : i + 4] for i in range(0, len(rest), 4)]
        pipe = self._client.pipeline(transaction=False)
        for queue, (_, _, _, head) in zip(queues, per_queue, strict=True):
            for broker_id in brokers:
                pipe.scard(acks_key(broker_id, queue))
            pipe.hget(queue_key(queue, ".msgs"), head or "")
        answers = iter(pipe.execute())
        now = now_ms()
        stats = []
        for queue, (ready, delayed, dead, _) in zip(queues, per_queue, strict=True):
            in_flight = sum(_int(next(answers)) for _ in brokers)
            enqueued_at = _int(_message(next(answers)).get("message_timestamp")) or None
            age = max(now - enqueued_at, 0) / 1000 if enqueued_at else None
            stats.append(QueueStats(queue, _int(ready), _int(delayed), in_flight, _int(dead), age))
        return stats

    def dead(self, queues: Sequence[str], limit: int = 1000) -> list[DeadMessage]:
        """Dead-lettered messages of ``queues``, newest first (at most ``limit`` per queue)."""
        pipe = self._client.pipeline(transaction=False)
        for queue in queues:
            pipe.zrevrange(queue_key(queue, ".XQ"), 0, limit - 1, withscores=True)
        listed = cast(list[list[tuple[str, float]]], pipe.execute())
        pipe = self._client.pipeline(transaction=False)
        for queue, entries in zip(queues, listed, strict=True):
            for redis_id, _ in entries:
                pipe.hget(queue_key(queue, ".XQ.msgs"), redis_id)
        bodies = iter(pipe.execute())
        found = []
        for queue, entries in zip(queues, listed, strict=True):
            for redis_id, score in entries:
                message = _message(next(bodies))
                args = message.get("args")
                # A damaged or foreign message names no job: it is listed, requeued or purged by its id alone.
                job_id = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
                enqueued_at = _int(message.get("message_timestamp")) or None
                found.append(DeadMessage(queue, redis_id, job_id, int(score), enqueued_at))
        return found

    def requeue(self, dead: DeadMessage) -> bool:
        """Move a dead message back to the tail of its queue, as Dramatiq's own enqueue lays it out;
        False when it is no longer dead (requeued or purged by someone else)."""
        touched = [
            queue_key(dead.queue, ".XQ"),
            queue_key(dead.queue, ".XQ.msgs"),
            queue_key(dead.queue, ".msgs"),
            queue_key(dead.queue),
            keys.JOB.format(job_id=dead.job_id or "-"),
            keys.QUEUED,
            keys.RUNNING,
        ]
        return bool(self._requeue(keys=touched, args=[dead.redis_id, dead.job_id or ""]))

    def drop(self, dead: DeadMessage) -> bool:
        """Remove a dead message for good; False when it is no longer dead."""
        pipe = self._client.pipeline()
        pipe.zrem(queue_key(dead.queue, ".XQ"), dead.redis_id)
        pipe.hdel(queue_key(dead.queue, ".XQ.msgs"), dead.redis_id)
        removed, _ = pipe.execute()
        return bool(removed)
