"""Dramatiq's Redis layout, as tasks/dramatiq_redis.py reads and repairs it, pinned against a real broker.

A Dramatiq upgrade that moves a key, renames a suffix or changes what its consumer keeps fails here
first: enqueue, fetch, ack, nack into the dead letters, requeue and drop, each step checked in the
raw keys and through the module's own reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker

from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import keys
from hypernode_host.tasks.broker import ACTOR_NAME, build_broker, enqueue_job
from hypernode_host.tasks.dramatiq_redis import HEARTBEATS, DeadMessage, Queues, WakingConsumer, acks_key, queue_key

QUEUE = "hn-layout"


@pytest.fixture
def broker(redis_server: RedisProcess) -> Iterator[RedisBroker]:
    broker = build_broker(redis_server.url)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()
    broker.client.close()


@pytest.fixture
def queues(redis_client: redis.Redis) -> Queues:
    return Queues(redis_client)


@pytest.fixture
def consumer(broker: RedisBroker) -> Iterator[Consumer]:
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    yield consumer
    consumer.close()


def fetch(consumer: Consumer) -> MessageProxy:
    """The next message the consumer takes (it answers None while it waits for one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no message fetched within 10 s")


def test_enqueue_fetch_and_ack_as_the_module_reads_them(
    broker: RedisBroker, consumer: Consumer, queues: Queues, redis_client: redis.Redis
) -> None:
    assert isinstance(consumer, WakingConsumer)  # our subclass of Dramatiq's private consumer
    before = int(time.time() * 1000)
    enqueue_job(broker, QUEUE, "job-1")

    [redis_id] = redis_client.lrange(queue_key(QUEUE), 0, -1)  # ready: its id in the list
    body = json.loads(redis_client.hget(queue_key(QUEUE, ".msgs"), redis_id) or "{}")  # and the message
    assert (body["actor_name"], body["args"], body["options"]["redis_message_id"]) == (ACTOR_NAME, ["job-1"], redis_id)
    assert before <= body["message_timestamp"] <= int(time.time() * 1000)
    assert redis_client.llen(keys.WAKE.format(queue=QUEUE)) == 1  # a token wakes an idle consumer
    [stats] = queues.stats([QUEUE])
    assert (stats.queue, stats.ready, stats.delayed, stats.in_flight, stats.dead) == (QUEUE, 1, 0, 0, 0)
    assert stats.oldest_age_s is not None and 0 <= stats.oldest_age_s < 60

    message = fetch(consumer)

    assert message.options["redis_message_id"] == redis_id and message.args == ("job-1",)
    assert redis_client.llen(queue_key(QUEUE)) == 0
    assert redis_client.smembers(acks_key(broker.broker_id, QUEUE)) == {redis_id}  # in flight, per broker
    assert redis_client.zscore(HEARTBEATS, broker.broker_id) is not None
    assert redis_client.hexists(queue_key(QUEUE, ".msgs"), redis_id)  # kept until acked
    [stats] = queues.stats([QUEUE])
    assert (stats.ready, stats.in_flight, stats.oldest_age_s) == (0, 1, None)

    consumer.ack(message)

    assert redis_client.scard(acks_key(broker.broker_id, QUEUE)) == 0
    assert not redis_client.hexists(queue_key(QUEUE, ".msgs"), redis_id)
    [stats] = queues.stats([QUEUE])
    assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 0)


def test_a_nacked_message_is_a_dead_letter_that_can_be_requeued_and_dropped(
    broker: RedisBroker, consumer: Consumer, queues: Queues, redis_client: redis.Redis
) -> None:
    enqueue_job(broker, QUEUE, "job-2")
    message = fetch(consumer)
    redis_id = message.options["redis_message_id"]
    before = int(time.time() * 1000)

    consumer.nack(message)  # what Dramatiq does when the actor raises and no retry is left

    dead_at = redis_client.zscore(queue_key(QUEUE, ".XQ"), redis_id)
    assert dead_at is not None and before <= dead_at <= int(time.time() * 1000)
    assert redis_client.hexists(queue_key(QUEUE, ".XQ.msgs"), redis_id)
    assert not redis_client.hexists(queue_key(QUEUE, ".msgs"), redis_id)
    assert redis_client.scard(acks_key(broker.broker_id, QUEUE)) == 0
    [dead] = queues.dead([QUEUE])
    assert dead == DeadMessage(QUEUE, redis_id, "job-2", int(dead_at), message.message_timestamp)
    assert queues.stats([QUEUE])[0].dead == 1

    assert queues.requeue(dead)
    assert not queues.requeue(dead)  # moved once

    assert redis_client.lrange(queue_key(QUEUE), 0, -1) == [redis_id]  # as Dramatiq's enqueue lays it out
    assert redis_client.zcard(queue_key(QUEUE, ".XQ")) == 0 and redis_client.hlen(queue_key(QUEUE, ".XQ.msgs")) == 0
    again = fetch(consumer)  # Dramatiq takes it like any other message
    assert again.options["redis_message_id"] == redis_id and again.args == ("job-2",)
    consumer.nack(again)

    [dead] = queues.dead([QUEUE])
    assert queues.drop(dead)
    assert not queues.drop(dead)
    assert queues.dead([QUEUE]) == [] and redis_client.hlen(queue_key(QUEUE, ".XQ.msgs")) == 0


def test_a_delayed_message_waits_in_the_delay_queue(
    broker: RedisBroker, queues: Queues, redis_client: redis.Redis
) -> None:
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name=ACTOR_NAME, args=("job-3",), kwargs={}, options={}
    )
    enqueued = broker.enqueue(message, delay=60_000)

    assert redis_client.hexists(queue_key(QUEUE, ".DQ.msgs"), enqueued.options["redis_message_id"])
    [stats] = queues.stats([QUEUE])
    assert (stats.ready, stats.delayed) == (0, 1)
