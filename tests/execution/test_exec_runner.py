"""The runner's exactly-once rules, in process, against a real Docker engine and a real Redis.

Two runners stand for the workers of two slots of one node. Containers a crashed worker
would have left are made by hand with the same contract, names and labels.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from hypernode_host.backend.oracle import verify
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store, keys
from hypernode_host.state.records import JobRecord
from hypernode_host.tasks.containers import (
    LABEL_JOB,
    LABEL_NODE,
    LABEL_NODE_ID,
    LABEL_ROLE,
    LABEL_WORKER,
    ContainerSpec,
    ContainerState,
    DockerRuntime,
)
from hypernode_host.tasks.recovery import recover
from hypernode_host.tasks.requirements import PREP_ROLE
from hypernode_host.tasks.runner import JobRunner, container_name, job_times
from support import TEST_IMAGE


@dataclass
class Rig:
    settings: Settings
    store: Store
    runtime: DockerRuntime
    runners: dict[int, JobRunner]

    def record(self, command: str, **fields: Any) -> str:
        job_id = f"r-{secrets.token_hex(6)}"
        job = {"id": job_id, "command": command, "memoryLimit": "128m", "cpuLimit": 1, **fields}
        assert self.store.jobs.record(job_id, job, CPU_QUEUE)
        return job_id

    def leftover(self, job_id: str, slot: int, command: str, *, start: bool = True, **labels: str) -> str:
        """A container as a worker of ``slot`` would have made it for ``job_id``."""
        spec = ContainerSpec(
            name=self.name(job_id) if job_id else f"hn-test-{secrets.token_hex(6)}",
            image=TEST_IMAGE,
            command=["sh", "-c", command],
            env={},
            labels={
                LABEL_NODE: self.settings.node_name,
                LABEL_NODE_ID: self.store.node.identity(),
                LABEL_WORKER: str(slot),
                LABEL_JOB: job_id,
                **labels,
            },
            memory_bytes=128 << 20,
            nano_cpus=1_000_000_000,
        )
        container_id = self.runtime.create(spec)
        if start:
            self.runtime.start(container_id)
        return container_id

    def name(self, job_id: str) -> str:
        return container_name(self.store.node.identity(), job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self.store.jobs.get(job_id)
        assert record is not None
        return record

    def result(self, job_id: str) -> dict[str, Any]:
        record = self.get(job_id)
        assert record.state == "finished", record
        return record.result()

    def containers(self) -> list[str]:
        return [cid for cid, _ in self.runtime.labelled(LABEL_NODE, self.settings.node_name)]


@pytest.fixture
def rig(docker_runtime: DockerRuntime, redis_server: RedisProcess) -> Iterator[Rig]:
    settings = Settings.from_env(
        {"HN_JOB_IMAGE": TEST_IMAGE, "HN_NODE_NAME": f"test-{secrets.token_hex(4)}", "HN_JOB_TIMEOUT": "60"}
    )
    store = Store.from_url(redis_server.url)
    slots = plan_slots([], 2)
    key = NodeKey.generate()
    runners = {slot.id: JobRunner(settings, store, docker_runtime, key, slot, slots) for slot in slots}
    built = Rig(settings, store, docker_runtime, runners)
    try:
        yield built
    finally:
        for container_id in built.containers():
            docker_runtime.remove(container_id)
        store.close()


def test_a_delivery_for_a_job_that_a_live_slot_holds_is_left_to_it(rig: Rig, redis_client: redis.Redis) -> None:
    job_id = rig.record("sleep 30")
    assert rig.runners[1].claim(job_id, rig.get(job_id), rig.name(job_id)) == 1
    held = rig.leftover(job_id, 1, "sleep 30")
    redis_client.hset(keys.WORKER.format(host=rig.settings.node_name, slot=1), "pid", 1)  # slot 1's worker lives

    rig.runners[0].run(job_id)  # the message, delivered again to slot 0

    record = rig.get(job_id)
    assert record.state == "running" and record.slot == 1 and record.attempt == 1
    assert rig.containers() == [held] and rig.runtime.state(held).running  # untouched


def test_a_job_whose_slot_died_is_taken_over_and_its_container_reattached(rig: Rig) -> None:
    job_id = rig.record("echo from-slot-1; sleep 1; echo done")
    assert rig.runners[1].claim(job_id, rig.get(job_id), rig.name(job_id)) == 1
    rig.leftover(job_id, 1, "echo from-slot-1; sleep 1; echo done")  # slot 1 is not registered: it died

    rig.runners[0].run(job_id)

    result = rig.result(job_id)
    assert result["status"] == "completed"
    assert result["logs"] == "from-slot-1\ndone\n"  # the whole output, from the container's start
    assert rig.get(job_id).attempt == 2
    assert rig.containers() == []


def test_a_container_created_but_never_started_is_replaced(rig: Rig) -> None:
    job_id = rig.record("echo fresh")
    assert rig.runners[0].claim(job_id, rig.get(job_id), rig.name(job_id)) == 1
    stale = rig.leftover(job_id, 0, "echo stale", start=False)  # the worker died between create and start

    rig.runners[0].run(job_id)

    result = rig.result(job_id)
    assert result["status"] == "completed" and result["logs"] == "fresh\n"
    assert rig.runtime.find(rig.name(job_id)) is None
    assert stale not in rig.containers()


def test_a_finished_job_is_never_run_again(rig: Rig) -> None:
    job_id = rig.record("echo once")
    rig.runners[0].run(job_id)
    first = rig.result(job_id)

    rig.runners[1].run(job_id)
    rig.runners[0].run(job_id)

    assert rig.result(job_id) == first
    assert rig.get(job_id).attempt == 1


def test_recovery_collects_the_exited_container_and_reaps_only_its_slots_leftovers(rig: Rig) -> None:
    interrupted = rig.record("echo collected")
    assert rig.runners[0].claim(interrupted, rig.get(interrupted), rig.name(interrupted)) == 1
    exited = rig.leftover(interrupted, 0, "echo collected")
    assert rig.runtime.wait(exited, 30)
    finished = rig.record("echo finished")
    rig.runners[0].run(finished)
    leftover = rig.leftover(finished, 0, "true", start=False)
    prep = rig.leftover("", 0, "sleep 30", **{LABEL_ROLE: PREP_ROLE})
    others = rig.leftover("", 1, "sleep 30")  # another slot's: not ours to touch

    recover(rig.runners[0], rig.runtime, rig.store)

    result = rig.result(interrupted)
    assert result["status"] == "completed" and result["logs"] == "collected\n"
    remaining = rig.containers()
    assert exited not in remaining and leftover not in remaining and prep not in remaining
    assert others in remaining


def test_a_result_kept_before_a_crash_is_published_without_running_again(rig: Rig) -> None:
    job_id = rig.record("echo once")
    rig.runners[0].run(job_id)
    kept = rig.result(job_id)
    again = rig.record("echo must-not-run")  # the same result, as its dead worker had kept it
    assert rig.runners[0].claim(again, rig.get(again), rig.name(again)) == 1
    exited = rig.leftover(again, 0, "echo must-not-run")
    assert rig.runtime.wait(exited, 30)
    rig.store.jobs.keep_result(again, {**kept, "id": again})

    recover(rig.runners[0], rig.runtime, rig.store)

    assert rig.result(again) == {**kept, "id": again}  # published as kept, not recomputed
    assert rig.get(again).attempt == 1
    assert rig.containers() == []


# Times ------------------------------------------------------------------------------------------


class BackwardsTimes:
    """The real engine, reporting a container's times as Docker can for one that exits at once:
    FinishedAt before StartedAt (and StartedAt a little after the worker saw it exit)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def state(self, container_id: str) -> ContainerState:
        state = self._runtime.state(container_id)
        if state.running or not state.finished_at_ms:
            return state
        return dataclasses.replace(state, started_at_ms=state.finished_at_ms + 2_000)


def test_a_container_that_exits_at_once_gets_ordered_truthful_times(rig: Rig) -> None:
    slot, slots = rig.runners[0].slot, rig.runners[0].slots
    runner = JobRunner(rig.settings, rig.store, BackwardsTimes(rig.runtime), NodeKey.generate(), slot, slots)
    job_id = rig.record("echo done")
    job = rig.get(job_id).job()
    before = int(time.time() * 1000)

    runner.run(job_id)

    after = int(time.time() * 1000)
    result = rig.result(job_id)
    assert result["status"] == "completed"
    assert before <= result["startedAt"] <= result["completedAt"] <= after
    assert result["durationMs"] == result["completedAt"] - result["startedAt"]
    verification = verify(
        job, result, node_id=result["nodeId"], node_public_key=None, dispatched_at_ms=before, received_at_ms=after
    )
    assert verification.checks["timingValid"], verification.reasons


MS = st.integers(min_value=0, max_value=2**42)


@given(docker_started=MS, docker_finished=MS, before_start=st.one_of(st.none(), MS), after_exit=MS)
def test_job_times_are_ordered_and_within_what_the_worker_saw(
    docker_started: int, docker_finished: int, before_start: int | None, after_exit: int
) -> None:
    if before_start is not None and before_start > after_exit:
        before_start, after_exit = after_exit, before_start  # the worker's own clock readings are ordered
    started, completed = job_times(docker_started, docker_finished, before_start, after_exit)

    assert (before_start or 0) <= started <= completed <= after_exit
    if (before_start or 0) <= docker_started <= docker_finished <= after_exit and docker_started:
        assert (started, completed) == (docker_started, docker_finished)  # Docker's own, when they are plausible
