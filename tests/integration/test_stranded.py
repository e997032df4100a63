"""No message stranded in a live worker's ack set (tasks/dramatiq_redis.py, WakingConsumer.restore).

A fetch whose reply is lost leaves the message in the fetching broker's ack set: Dramatiq itself
puts it back only when that broker stops heartbeating, so a live worker would hold it forever
without running it. These tests leave a message exactly where such a fetch leaves it (its body in
the queue's messages, its id in the broker's ack set, in no ready list) and see it run.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.tasks.broker import ACTOR_NAME, build_broker, enqueue_job
from hypernode_host.tasks.dramatiq_redis import WakingConsumer, WakingRedisBroker, acks_key, queue_key
from support import wait_for

QUEUE = "hn-stranded"


@pytest.fixture
def broker(redis_server: RedisProcess) -> Iterator[WakingRedisBroker]:
    broker = build_broker(redis_server.url)
    assert isinstance(broker, WakingRedisBroker)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


def strand(broker: WakingRedisBroker, client: redis.Redis, job_id: str) -> str:
    """Enqueue a message for ``job_id`` and fetch it for ``broker`` with the reply thrown away."""
    enqueue_job(broker, QUEUE, job_id)
    [redis_id] = client.lrange(queue_key(QUEUE), 0, -1)
    broker.do_fetch(QUEUE, 1)  # the fetch ran in Redis; its reply never reached a consumer
    assert redis_id in client.smembers(acks_key(broker.broker_id, QUEUE))
    assert client.llen(queue_key(QUEUE)) == 0
    return str(redis_id)


def strand_behind(broker: WakingRedisBroker, client: redis.Redis, job_id: str) -> str:
    """What ``strand`` leaves, written directly: a live consumer would race the test's fetch."""
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}
    )
    redis_id = str(uuid.uuid4())
    body = message.copy(options={"redis_message_id": redis_id}).encode()
    pipe = client.pipeline()
    pipe.hset(queue_key(QUEUE, ".msgs"), redis_id, body)
    pipe.sadd(acks_key(broker.broker_id, QUEUE), redis_id)
    pipe.execute()
    return redis_id


def test_a_new_consumer_puts_back_what_its_broker_fetched_and_does_not_hold(
    broker: WakingRedisBroker, redis_client: redis.Redis
) -> None:
    running = broker.consume(QUEUE, prefetch=1, timeout=100)
    assert isinstance(running, WakingConsumer)
    enqueue_job(broker, QUEUE, "held")
    held = wait_for(lambda: next(running), timeout=30)  # handed to the worker: it runs, it is not put back
    lost = strand(broker, redis_client, "lost")

    fresh = broker.consume(QUEUE, prefetch=1, timeout=100)  # as Dramatiq makes one after a connection error
    assert isinstance(fresh, WakingConsumer)
    assert fresh.restore() == [lost]

    assert redis_client.lrange(queue_key(QUEUE), 0, -1) == [lost]
    assert redis_client.smembers(acks_key(broker.broker_id, QUEUE)) == {held.options["redis_message_id"]}
    again = wait_for(lambda: next(fresh), timeout=30)
    assert again.args == ("lost",)
    assert fresh.restore() == []  # nothing twice: both messages are held now
    fresh.ack(again)
    fresh.ack(held)
    assert redis_client.scard(acks_key(broker.broker_id, QUEUE)) == 0


def test_a_worker_runs_a_message_stranded_by_a_lost_fetch_reply_after_its_connection_drops(
    broker: WakingRedisBroker, redis_client: redis.Redis
) -> None:
    ran: list[str] = []
    done = threading.Event()

    def run_job(job_id: str) -> None:
        ran.append(job_id)
        done.set()

    dramatiq.actor(actor_name=ACTOR_NAME, broker=broker, queue_name=QUEUE, max_retries=0)(run_job)
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=1)
    worker.queue_prefetch = 1
    worker.start()
    try:
        enqueue_job(broker, QUEUE, "first")
        wait_for(lambda: ran == ["first"], timeout=30)
        wait_for(lambda: redis_client.scard(acks_key(broker.broker_id, QUEUE)) == 0, timeout=30)
        strand_behind(broker, redis_client, "stranded")  # the worker is alive and heartbeating: Dramatiq keeps it there

        redis_client.client_kill_filter(_type="normal", skipme=True)  # every connection drops, the consumer's too

        wait_for(lambda: "stranded" in ran, timeout=60)
        assert ran == ["first", "stranded"]
        wait_for(lambda: redis_client.scard(acks_key(broker.broker_id, QUEUE)) == 0, timeout=30)
        assert redis_client.hlen(queue_key(QUEUE, ".msgs")) == 0
    finally:
        worker.stop(timeout=10_000)
