"""Job intake against a real Redis and Dramatiq broker: a job id is claimed once, an intake cut short
(a bridge killed, or Redis gone, between the claim and the enqueue) is completed, never repeated."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from hypernode_host.bridge.intake import Intake, Known
from hypernode_host.core.jobs import JobState
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.broker import build_broker
from hypernode_host.tasks.dramatiq_redis import queue_key

JOB = {"id": "in-1", "script": "print('done')", "memoryLimit": "128m", "cpuLimit": 0.5}
REFUSED = {"id": "in-2", "script": "print('done')", "memoryLimit": "lots"}


@pytest.fixture
def intake(redis_server: RedisProcess) -> Iterator[Intake]:
    settings = Settings.from_env({"HN_NODE_TOKEN": "t", "HN_REDIS_URL": redis_server.url, "HN_JOB_IMAGE": "img"})
    broker = build_broker(redis_server.url)
    with Store.from_url(redis_server.url) as store:
        yield Intake(settings, store, broker, NodeKey.generate(), plan_slots([], 1))
    broker.close()


def enqueued(client: redis.Redis) -> int:
    return int(client.hlen(queue_key(CPU_QUEUE, ".msgs")))


def test_a_new_job_is_recorded_and_enqueued_once(intake: Intake, redis_client: redis.Redis) -> None:
    assert intake.accept("in-1", JOB) is None

    assert intake.accept("in-1", JOB) == Known("in-1", JobState.QUEUED)  # the same id again: not run twice
    assert enqueued(redis_client) == 1
    record = intake.store.jobs.get("in-1")
    assert record is not None and (record.state, record.queue, record.enqueued) == ("queued", CPU_QUEUE, True)


def test_a_refused_job_gets_an_error_result_in_the_outbox(intake: Intake, redis_client: redis.Redis) -> None:
    assert intake.accept("in-2", REFUSED) is None

    [entry] = intake.store.outbox.entries()
    assert entry.job_id == "in-2"
    assert entry.result["status"] == "error" and entry.result["logs"].startswith("invalid job: memoryLimit")
    assert entry.result["reason"] == "invalid_job"
    assert enqueued(redis_client) == 0
    known = intake.accept("in-2", REFUSED)  # known and finished: its result is in the outbox
    assert known is not None and (known.state, json.loads(known.result or "")) == ("finished", entry.result)
    assert len(intake.store.outbox.entries()) == 1


def test_a_claim_whose_intake_was_cut_short_is_completed_when_the_job_comes_again(
    intake: Intake, redis_client: redis.Redis
) -> None:
    intake.store.jobs.record("in-1", JOB, CPU_QUEUE)  # a bridge that died right after the claim
    intake.store.jobs.record("in-2", REFUSED, "")

    assert intake.accept("in-1", JOB) == Known("in-1", JobState.QUEUED)
    finished = intake.accept("in-2", REFUSED)
    assert finished is not None and finished.state is JobState.FINISHED

    assert enqueued(redis_client) == 1
    assert intake.accept("in-1", JOB) == Known("in-1", JobState.QUEUED)
    assert enqueued(redis_client) == 1  # completed once, not again
    assert [e.job_id for e in intake.store.outbox.entries()] == ["in-2"]


def test_reconcile_completes_every_intake_cut_short(intake: Intake, redis_client: redis.Redis) -> None:
    intake.store.jobs.record("in-1", JOB, CPU_QUEUE)
    intake.store.jobs.record("in-2", REFUSED, "")

    intake.reconcile()
    intake.reconcile()

    assert enqueued(redis_client) == 1
    assert [e.job_id for e in intake.store.outbox.entries()] == ["in-2"]
    assert intake.store.jobs.unenqueued() == []


def test_a_reported_job_sent_again_is_known_with_its_stored_result(intake: Intake) -> None:
    intake.accept("in-2", REFUSED)
    [entry] = intake.store.outbox.entries()
    intake.store.outbox.acknowledge(entry.entry_id, "in-2")

    known = intake.accept("in-2", REFUSED)

    assert known is not None and known.state is JobState.REPORTED
    assert json.loads(known.result or "") == entry.result


def test_a_rejected_result_leaves_the_outbox_and_stays_in_the_record(intake: Intake, redis_client: redis.Redis) -> None:
    intake.accept("in-2", REFUSED)
    [entry] = intake.store.outbox.entries()

    intake.store.outbox.reject(entry.entry_id, "in-2", "Job not found", 1234)

    assert intake.store.outbox.entries() == []  # never sent again
    record = intake.store.jobs.get("in-2")
    assert record is not None and record.done
    assert (record.state, record.rejection, record.rejected_at) == (JobState.REJECTED, "Job not found", 1234)
    assert intake.store.node.get().results_rejected == 1
    assert not intake.store.jobs.finish("in-2", entry.result)  # a rejected job is finished: never stored again
    known = intake.accept("in-2", REFUSED)
    assert known is not None and known.state is JobState.REJECTED


def test_a_running_job_sent_again_is_pending(intake: Intake) -> None:
    intake.accept("in-1", JOB)
    intake.store.jobs.claim("in-1", intake.settings.node_name, 0, "hn-job-in-1")

    assert intake.accept("in-1", JOB) == Known("in-1", JobState.RUNNING)
