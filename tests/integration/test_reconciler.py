"""The reconciler (tasks/reconcile.py) against a real Redis and real Dramatiq messages.

Each test leaves a job where a fault would (queued or running, its message gone or not), runs one
pass and checks what it did: a new message exactly when the job has none and nobody holds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import redis

from hypernode_host.core.clock import now_ms
from hypernode_host.core.slots import Slot
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store, keys
from hypernode_host.state.records import JobRecord, Registration
from hypernode_host.tasks.broker import build_broker, enqueue_job
from hypernode_host.tasks.dramatiq_redis import Queues, WakingRedisBroker, queue_key
from hypernode_host.tasks.reconcile import GRACE_MS, Reconciler

QUEUE = "hn-cpu"
HOST = "node-a"
RETENTION_S = 3600
TOMBSTONE_S = 7200


class Fakes:
    """What the worker gives the reconciler besides Redis: the engine's answer and the refusal."""

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.refused: list[str] = []

    def has_container(self, job_id: str) -> bool:
        return job_id in self.containers

    def refuse(self, record: JobRecord) -> bool:
        self.refused.append(record.id)
        return True


@pytest.fixture
def broker(redis_server: RedisProcess) -> Iterator[WakingRedisBroker]:
    broker = build_broker(redis_server.url)
    assert isinstance(broker, WakingRedisBroker)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def reconciler(store: Store, redis_server: RedisProcess, fakes: Fakes) -> Iterator[Reconciler]:
    queues = Queues(redis.Redis.from_url(redis_server.url, decode_responses=True))
    yield Reconciler(store, queues, HOST, fakes.has_container, fakes.refuse, RETENTION_S, TOMBSTONE_S)
    queues.close()


def received(store: Store, redis_client: redis.Redis, job_id: str, queue: str = QUEUE, age_ms: int = GRACE_MS) -> None:
    """A job the bridge recorded ``age_ms`` ago (its message not sent)."""
    refusal = None if queue else ("invalid_job", "job refused")
    assert store.jobs.record(job_id, {"id": job_id, "script": "print(1)"}, queue, refusal)
    redis_client.hset(keys.JOB.format(job_id=job_id), "received_at", now_ms() - age_ms)


def claimed(store: Store, job_id: str, slot: int = 0) -> None:
    assert store.jobs.claim(job_id, HOST, slot, f"hn-job-{job_id}") == 1


def messages(redis_client: redis.Redis) -> list[str]:
    """The job ids of the ready messages of QUEUE, oldest first."""
    bodies = [redis_client.hget(queue_key(QUEUE, ".msgs"), i) for i in redis_client.lrange(queue_key(QUEUE), 0, -1)]
    return [str(json.loads(b or "{}")["args"][0]) for b in bodies]


def test_a_queued_job_with_no_message_is_requeued_once(
    reconciler: Reconciler, store: Store, redis_client: redis.Redis
) -> None:
    received(store, redis_client, "lost")

    done = reconciler.run()

    assert (done.candidates, done.requeued, done.finished) == (1, ["lost"], [])
    assert messages(redis_client) == ["lost"]
    assert redis_client.llen(keys.WAKE.format(queue=QUEUE)) == 1  # an idle worker wakes for it
    assert reconciler.run().requeued == []  # it has a message now
    assert messages(redis_client) == ["lost"]
    stats = store.reconciler.stats()
    assert (stats.passes, stats.requeued, stats.finished, stats.last_candidates) == (2, 1, 0, 1)
    assert stats.last_at is not None


def test_a_job_with_a_message_anywhere_or_too_young_is_left_alone(
    reconciler: Reconciler, store: Store, redis_client: redis.Redis, broker: WakingRedisBroker
) -> None:
    received(store, redis_client, "ready")
    enqueue_job(broker, QUEUE, "ready")
    received(store, redis_client, "fetched")
    enqueue_job(broker, QUEUE, "fetched")
    consumer = broker.consume(QUEUE, prefetch=2, timeout=100)
    taken = [m for m in (next(consumer), next(consumer)) if m is not None]
    assert [m.args[0] for m in taken] == ["ready", "fetched"]  # both in the broker's ack set now
    enqueue_job(broker, QUEUE, "ready")
    received(store, redis_client, "young", age_ms=0)  # the bridge is about to send its message

    assert reconciler.run().requeued == []
    consumer.close()


def test_a_running_job_is_requeued_only_when_its_holder_is_gone_and_it_has_no_container(
    reconciler: Reconciler, store: Store, redis_client: redis.Redis, fakes: Fakes
) -> None:
    for job_id, slot in (("held", 0), ("orphan", 1), ("in-docker", 2)):
        received(store, redis_client, job_id)
        claimed(store, job_id, slot)
    store.registry.register(Registration(host=HOST, slot=Slot(id=0, gpus=()), owner="w0", pid=1), 60, now_ms())
    fakes.containers.add("in-docker")  # its slot's next worker resumes it

    done = reconciler.run()

    assert done.requeued == ["orphan"]
    assert messages(redis_client) == ["orphan"]
    assert store.jobs.claim("orphan", HOST, 3, "hn-job-orphan") == 2  # whoever takes the message takes it over


def test_a_job_refused_at_intake_whose_result_was_never_stored_is_finished(
    reconciler: Reconciler, store: Store, redis_client: redis.Redis, fakes: Fakes
) -> None:
    received(store, redis_client, "refused", queue="")

    done = reconciler.run()

    assert (done.requeued, done.finished, fakes.refused) == ([], ["refused"], ["refused"])
    assert messages(redis_client) == []


def test_only_one_process_takes_each_turn(reconciler: Reconciler, store: Store, redis_server: RedisProcess) -> None:
    other = Reconciler(store, reconciler.queues, "node-b", lambda _: False, lambda _: False, 1, 1)
    assert reconciler.due()
    assert not other.due()
    assert not reconciler.due()


# retention -------------------------------------------------------------------------------------


def finished(store: Store, redis_client: redis.Redis, job_id: str) -> str:
    """A job that ran, its result in the outbox: the entry id."""
    received(store, redis_client, job_id)
    claimed(store, job_id)
    assert store.jobs.finish(job_id, {"id": job_id, "status": "completed", "durationMs": 5, "logs": "x" * 5000})
    return str(redis_client.hget(keys.JOB.format(job_id=job_id), "entry"))


def test_a_settled_job_shrinks_to_a_tombstone_after_the_retention_then_is_forgotten(
    reconciler: Reconciler, store: Store, redis_client: redis.Redis
) -> None:
    old = now_ms() - RETENTION_S * 1000 - 1000
    entry = finished(store, redis_client, "old")
    result = redis_client.hget(keys.JOB.format(job_id="old"), "result") or ""
    assert store.outbox.acknowledge(entry, "old", at_ms=old)
    store.outbox.reject(finished(store, redis_client, "refused"), "refused", "Job not found", old)
    store.outbox.acknowledge(finished(store, redis_client, "recent"), "recent")
    finished(store, redis_client, "unsettled")  # its result still waits for the backend: never touched
    redis_client.hset(keys.JOB.format(job_id="unsettled"), "finished_at", old)

    done = reconciler.run()

    assert (done.compacted, done.forgotten) == (2, 0)
    tombstone = redis_client.hgetall(keys.JOB.format(job_id="old"))
    assert set(tombstone) == {
        "id",
        "state",
        "status",
        "received_at",
        "finished_at",
        "settled_at",
        "compacted_at",
        "result_sha256",
    }
    assert tombstone["result_sha256"] == hashlib.sha256(result.encode()).hexdigest()
    record = store.jobs.get("old")
    assert record is not None and record.state == "reported" and record.compacted_at is not None
    assert store.jobs.get("refused").state == "rejected"  # type: ignore[union-attr]
    assert not store.jobs.record("old", {"id": "old"}, QUEUE)  # the id still cannot run again
    assert store.jobs.claim("old", HOST, 0, "hn-job-old") == 0
    assert not store.outbox.acknowledge(entry, "old")  # a late second ack leaves the tombstone as it is
    assert redis_client.hgetall(keys.JOB.format(job_id="old")) == tombstone
    assert "result" in redis_client.hgetall(keys.JOB.format(job_id="recent"))
    assert "result" in redis_client.hgetall(keys.JOB.format(job_id="unsettled"))
    assert store.jobs.retained() == (1, 2)
    assert [r.id for r in store.jobs.recent(10) if r.compacted_at] == ["refused", "old"]

    redis_client.zadd(keys.TOMBSTONES, {"old": now_ms() - TOMBSTONE_S * 1000 - 1000})  # as if compacted long ago
    done = reconciler.run()

    assert (done.compacted, done.forgotten) == (0, 1)
    assert not redis_client.exists(keys.JOB.format(job_id="old"))
    assert redis_client.zscore(keys.JOB_INDEX, "old") is None
    assert redis_client.zscore(keys.FINISHED_INDEX, "old") is None
    stats = store.reconciler.stats()
    assert (stats.compacted, stats.forgotten) == (2, 1)
