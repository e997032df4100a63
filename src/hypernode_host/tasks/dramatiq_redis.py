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

No stranded message: Dramatiq requeues an ack set only once its broker stops heartbeating, so a
message fetched by a live worker whose fetch reply was lost, or that sat in the cache of a consumer
that died of a connection error, would stay in that ack set for as long as the worker lives. So
every consumer of a WakingRedisBroker, before its first fetch (Dramatiq makes a new consumer after
each connection error), puts back on its queue every message of its ack set that the broker has
not handed to the worker: in its ack set and not held means nobody runs it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
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
from hypernode_host.state import connect, keys, redis_url, scripts, write_refusal

log = logging.getLogger(__name__)

NAMESPACE = keys.DRAMATIQ_NAMESPACE
HEARTBEATS = f"{NAMESPACE}:__heartbeats__"
# An enqueue pushes a token on its queue's wake list (keys.WAKE); spare tokens only cost an idle
# consumer one empty fetch, and the list is trimmed to this many.
WAKE_TOKENS_MAX = 64
# An idle consumer looks at its broker's ack set this often too: a message whose ack or nack Redis
# refused (out of memory) stays there, released by the worker, until someone puts it back.
RESTORE_EVERY_S = 30.0
REFUSED_WAIT_MAX_S = 5.0  # the longest wait between two tries of a write Redis refused


def _wait_while_refused(write: Any, *args: Any) -> Any:
    """``write(*args)``, tried again while Redis refuses writes (out of memory, a full disk): such a
    refusal ends when room is freed, and a fetched message must not be dropped meanwhile."""
    delay = 0.25
    while True:
        try:
            return write(*args)
        except redis.ResponseError as exc:
            why = write_refusal(exc)
            if why is None:
                raise
            if delay < REFUSED_WAIT_MAX_S:  # said while the waits grow, not at every try
                log.warning("Redis refuses writes (%s); trying again in %.1f s", why, delay)
        time.sleep(delay)
        delay = min(delay * 2, REFUSED_WAIT_MAX_S)


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

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.waking_broker = broker
        self._freed = threading.Event()
        self._restored = False
        self._restore_at = 0.0
        self._refused = False  # the last fetch was refused (logged once per refusal)

    def __next__(self) -> MessageProxy | None:
        if not self._restored or (not self.message_cache and time.monotonic() >= self._restore_at):
            try:
                self.restore()
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:  # refusing writes: the next call tries again
                if write_refusal(exc) is None:
                    raise
        try:
            found = self._next()
        except redis.ResponseError as exc:
            if (why := write_refusal(exc)) is None:
                raise
            if not self._refused:
                log.warning("queue %s: Redis refuses writes (%s); not fetching meanwhile", self.queue_name, why)
                self._refused = True
            time.sleep(self.timeout / 1000)
            return None
        self._refused = False
        return found

    def _next(self) -> MessageProxy | None:
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
        if found is not None:
            self.waking_broker.hold(self.queue_name, _redis_id(found))
        return found

    def restore(self) -> list[str]:
        """Put back on the queue every message of this broker's ack set that the worker does not hold.

        Called before the consumer's first fetch, and every RESTORE_EVERY_S while it has nothing
        fetched and not handed out (so no message is both in the ack set and not yet held because it
        is on its way to the worker). The ack set is read before the held ids: a
        message acked in between is no longer in the ack set, and Dramatiq's requeue moves only
        ids it removes from the ack set, so it is never put back twice. The ids put back.
        """
        broker = self.waking_broker
        fetched = cast(set[bytes], broker.client.smembers(acks_key(broker.broker_id, self.queue_name)))
        # A delay queue's consumer thread drops its held messages with the consumer (Dramatiq
        # resets its delay queue on a connection error, and requeues it on any other restart).
        held = set() if self.queue_name.endswith(".DQ") else broker.held(self.queue_name)
        orphans = sorted(i.decode() for i in fetched if i.decode() not in held)
        if orphans:
            log.warning("queue %s: putting back %d message(s) fetched but never run", self.queue_name, len(orphans))
            broker.do_requeue(self.queue_name, *orphans)
        self._restored = True
        self._restore_at = time.monotonic() + RESTORE_EVERY_S
        return orphans

    def ack(self, message: MessageProxy) -> None:
        try:
            _wait_while_refused(super().ack, message)
        finally:
            self.waking_broker.release(self.queue_name, _redis_id(message))
            self._freed.set()

    def nack(self, message: MessageProxy) -> None:
        try:
            _wait_while_refused(super().nack, message)
        finally:
            self.waking_broker.release(self.queue_name, _redis_id(message))
            self._freed.set()

    def requeue(self, messages: Any) -> None:
        listed = list(messages)
        super().requeue(listed)  # type: ignore[no-untyped-call]
        for message in listed:
            self.waking_broker.release(self.queue_name, _redis_id(message))


def _redis_id(message: MessageProxy) -> str:
    return str(message.options.get("redis_message_id", ""))


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose enqueue wakes an idle consumer of the queue (see WakingConsumer), and that
    knows which fetched messages its consumers have handed to the worker and not yet settled."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._held: dict[str, set[str]] = {}
        self._held_lock = threading.Lock()

    def hold(self, queue: str, redis_id: str) -> None:
        with self._held_lock:
            self._held.setdefault(queue, set()).add(redis_id)

    def release(self, queue: str, redis_id: str) -> None:
        with self._held_lock:
            self._held.get(queue, set()).discard(redis_id)

    def held(self, queue: str) -> set[str]:
        """Redis ids of the messages of ``queue`` handed to the worker (queued for or in its threads)."""
        with self._held_lock:
            return set(self._held.get(queue, ()))

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
    return WakingRedisBroker(client=client, namespace=NAMESPACE, **options)


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
class RestoredJob:
    """A job the reconciler found with no message: where it stood when it looked."""

    job_id: str
    queue: str
    state: str  # "queued" or "running"
    host: str = ""  # its holder, for a running job
    slot: str = ""


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
        self._restore = scripts.register(client, "restore_message", package="hypernode_host.tasks")

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

    def jobs_with_messages(self, queues: Sequence[str]) -> set[str]:
        """The job ids that have a message in any of ``queues``: ready, fetched by a worker and not yet
        acknowledged, delayed or dead-lettered.

        One MULTI, so the answer is a snapshot: a message moving between the lists as it is fetched,
        nacked or requeued is seen exactly once. Its cost grows with the messages of ``queues``.
        """
        pipe = self._client.pipeline(transaction=True)
        for queue in queues:
            for suffix in (".msgs", ".DQ.msgs", ".XQ.msgs"):
                pipe.hvals(queue_key(queue, suffix))
        found: set[str] = set()
        for bodies in cast(list[list[str]], pipe.execute()):
            for body in bodies:
                args = _message(body).get("args") or [None]
                if isinstance(args, list) and isinstance(args[0], str):
                    found.add(args[0])
        return found

    def restore(self, job: RestoredJob, message: dramatiq.Message[Any]) -> bool:
        """Put ``message`` (the job's, with a fresh redis id) on its queue if the job still stands
        as seen: queued, or running on a holder whose registration is still gone."""
        redis_id = str(message.options["redis_message_id"])
        touched = [
            keys.JOB.format(job_id=job.job_id),
            keys.WORKER.format(host=job.host, slot=job.slot),
            queue_key(job.queue, ".msgs"),
            queue_key(job.queue),
            keys.WAKE.format(queue=job.queue),
        ]
        args: list[str | int] = [job.state, job.host, job.slot, redis_id, message.encode().decode(), WAKE_TOKENS_MAX]
        return bool(self._restore(keys=touched, args=args))

    def drop(self, dead: DeadMessage) -> bool:
        """Remove a dead message for good; False when it is no longer dead."""
        pipe = self._client.pipeline()
        pipe.zrem(queue_key(dead.queue, ".XQ"), dead.redis_id)
        pipe.hdel(queue_key(dead.queue, ".XQ.msgs"), dead.redis_id)
        removed, _ = pipe.execute()
        return bool(removed)
