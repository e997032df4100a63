"""The runner's per-job boundary: whatever raises while one job runs ends that job with a signed error result
naming the cause in one line, its container removed, and the slot goes on with the next job."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import NODE_IDENTITY, Behaviour, FakeClock, FakeRuntime, FakeStore

from hypernode_host.core.proofs import NodeKey, execution_hash, verify_signature
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.escapes import is_clean
from hypernode_host.settings import Settings
from hypernode_host.tasks import runner as runner_module
from hypernode_host.tasks.containers import ContainerSpec
from hypernode_host.tasks.recovery import recover
from hypernode_host.tasks.runner import MIN_NANO_CPUS, JobRunner, container_name

SETTINGS = Settings.from_env({"HN_JOB_IMAGE": "img", "HN_NODE_NAME": "rig", "HN_JOB_TIMEOUT": "60"})
SLOTS = plan_slots([], 1)
KEY = NodeKey.generate()


def rig() -> tuple[JobRunner, FakeRuntime, FakeStore]:
    events: list[str] = []
    clock = FakeClock()
    runtime, store = FakeRuntime(clock, events), FakeStore(events)
    runner = JobRunner(SETTINGS, store, runtime, KEY, SLOTS[0], SLOTS, clock=clock)  # type: ignore[arg-type]
    return runner, runtime, store


def job(store: FakeStore, job_id: str = "j1", **fields: Any) -> str:
    store.jobs.record(
        job_id, {"id": job_id, "command": "work", "memoryLimit": "128m", "cpuLimit": 1, **fields}, CPU_QUEUE
    )
    return job_id


def result(store: FakeStore, job_id: str) -> dict[str, Any]:
    record = store.jobs.get(job_id)
    assert record is not None and record.done, record
    return record.result()


def test_an_unexpected_error_while_running_ends_the_job_with_a_signed_error_and_removes_its_container() -> None:
    runner, runtime, store = rig()
    job_id = job(store)
    runtime.behaviours[container_name(NODE_IDENTITY, job_id)] = Behaviour(runs_for_s=5)
    runtime.failures["start"] = KeyError("\x1b[2Jsomething broke\nforged line")  # no ContainerError: a bug

    runner.run(job_id)

    found = result(store, job_id)
    assert (found["status"], found["reason"]) == ("error", "internal")
    assert found["logs"].startswith("node error while running it: KeyError") and is_clean(found["logs"])
    assert verify_signature(KEY.public_key_b58, execution_hash(found), found["signature"])
    assert runtime.containers == {}  # removed

    del runtime.failures["start"]
    other = job(store, "j2")
    runner.run(other)  # the slot goes on
    assert result(store, other)["status"] == "completed"


def test_a_result_that_cannot_be_built_still_ends_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    runner, runtime, store = rig()
    job_id = job(store)

    def broken(**_: Any) -> None:
        raise TypeError("bad outcome")

    monkeypatch.setattr(runner_module, "make_result", broken)
    runner.run(job_id)

    found = result(store, job_id)
    assert found["reason"] == "internal" and "building its result: TypeError: bad outcome" in found["logs"]
    assert runtime.containers == {}


def test_a_damaged_stored_job_ends_with_invalid_job() -> None:
    runner, _, store = rig()
    job_id = job(store)
    store.jobs.hashes[job_id]["job"] = "{not json"

    runner.run(job_id)

    found = result(store, job_id)
    assert (found["status"], found["reason"]) == ("error", "invalid_job")


def test_the_cpu_limit_never_rounds_to_no_limit() -> None:
    runner, runtime, store = rig()
    job_id = job(store, cpuLimit=0.01)
    created: list[ContainerSpec] = []
    original = runtime.create
    runtime.create = lambda spec: created.append(spec) or original(spec)  # type: ignore[method-assign]

    runner.run(job_id)

    assert created[0].nano_cpus == MIN_NANO_CPUS == 10_000_000


def test_start_up_recovery_goes_on_past_a_job_that_raises() -> None:
    runner, runtime, store = rig()
    for job_id in ("r1", "r2"):
        job(store, job_id)
        store.jobs.claim(job_id, "rig", 0, container_name(NODE_IDENTITY, job_id))
    for job_id in ("r1", "r2"):  # each found its container gone, and raises while making a new one
        runtime.behaviours[container_name(NODE_IDENTITY, job_id)] = Behaviour()
    runtime.failures["create"] = RuntimeError("engine confused")

    recover(runner, runtime, store)  # type: ignore[arg-type]

    assert result(store, "r1")["reason"] == "internal" and result(store, "r2")["reason"] == "internal"
