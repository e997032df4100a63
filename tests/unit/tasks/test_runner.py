"""The runner's decisions, on a fake runtime, store and clock: deadline, cancel, grace then kill, reattach,
publish order and recovery, each in milliseconds (tests/execution/ runs the same paths on a real engine)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import NODE_IDENTITY, SIGKILL_EXIT, SIGTERM_EXIT, Behaviour, FakeClock, FakeRuntime, FakeStore

from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.errors import ContainerError, NameTaken
from hypernode_host.settings import Settings
from hypernode_host.tasks.containers import LABEL_JOB, LABEL_NODE, LABEL_NODE_ID, LABEL_ROLE, LABEL_WORKER
from hypernode_host.tasks.recovery import recover
from hypernode_host.tasks.requirements import PREP_ROLE
from hypernode_host.tasks.runner import STOP_GRACE_S, JobRunner
from hypernode_host.tasks.runner import container_name as named

NODE = "rig"
SETTINGS = Settings.from_env({"HN_JOB_IMAGE": "img", "HN_NODE_NAME": NODE, "HN_JOB_TIMEOUT": "60"})
SLOTS = plan_slots([], 2)


def container_name(job_id: str) -> str:
    return named(NODE_IDENTITY, job_id)


class Rig:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.clock = FakeClock()
        self.runtime = FakeRuntime(self.clock, self.events)
        self.store = FakeStore(self.events)
        self.runner = JobRunner(
            SETTINGS,
            self.store,
            self.runtime,
            NodeKey.generate(),
            SLOTS[0],
            SLOTS,
            clock=self.clock,  # type: ignore[arg-type]
            sleep=self.pause,
        )

    def pause(self, seconds: float) -> None:
        self.clock.now += seconds

    def job(self, job_id: str = "j1", behaviour: Behaviour | None = None, **fields: Any) -> str:
        self.store.jobs.record(
            job_id, {"id": job_id, "command": "work", "memoryLimit": "128m", "cpuLimit": 1, **fields}, CPU_QUEUE
        )
        if behaviour is not None:
            self.runtime.behaviours[container_name(job_id)] = behaviour
        return job_id

    def result(self, job_id: str) -> dict[str, Any]:
        record = self.store.jobs.get(job_id)
        assert record is not None and record.done, record
        return record.result()

    def labels(self, job_id: str, slot: int = 0, node: str = NODE, identity: str = NODE_IDENTITY) -> dict[str, str]:
        return {LABEL_JOB: job_id, LABEL_NODE: node, LABEL_NODE_ID: identity, LABEL_WORKER: str(slot)}


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_job_runs_to_its_exit_and_its_result_is_kept_then_the_container_removed_then_published(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(output=(b"working\n", b"done\n"), runs_for_s=30))
    started = rig.clock.now

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"], result["logs"]) == ("completed", 0, "working\ndone\n")
    assert result["durationMs"] == 30_000 and rig.clock.now == started + 30
    steps = [e for e in rig.events if e.split()[0] in {"create", "attach", "start", "keep_result", "remove", "finish"}]
    assert steps == [f"create {container_name(job_id)}", "attach", "start", "keep_result", "remove", "finish"]
    assert rig.runtime.containers == {}


def test_a_job_past_its_deadline_is_stopped_with_the_grace_then_killed(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(runs_for_s=3600), timeout=10)
    started = rig.clock.now

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"]) == ("timeout", SIGTERM_EXIT)
    assert rig.events.index(f"stop {STOP_GRACE_S}") < rig.events.index("kill")
    assert started + 10 <= rig.clock.now < started + 11  # stopped at its deadline, not a wait slice later


def test_a_job_that_ignores_sigterm_is_killed_when_the_grace_ends(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(runs_for_s=3600, ignores_sigterm=True), timeout=10)
    started = rig.clock.now

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"]) == ("timeout", SIGKILL_EXIT)
    assert rig.clock.now >= started + 10 + STOP_GRACE_S


def test_a_cancel_while_running_stops_the_job_at_its_next_wait_slice(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(runs_for_s=3600))
    rig.store.cancels.request(job_id)
    rig.store.cancels.after_checks[job_id] = 4  # unseen by the two checks before start and two wait slices

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"]) == ("cancelled", SIGTERM_EXIT)
    assert f"stop {STOP_GRACE_S}" in rig.events and "start" in rig.events


def test_a_job_cancelled_before_it_starts_never_gets_a_container(rig: Rig) -> None:
    job_id = rig.job()
    rig.store.cancels.request(job_id)

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"], result["logs"]) == ("cancelled", -1, "")
    assert not any(e.startswith("create") for e in rig.events)


def test_a_running_container_of_the_job_is_reattached_with_its_deadline_from_its_own_start(rig: Rig) -> None:
    job_id = rig.job(timeout=60)
    rig.runtime.leftover(
        container_name(job_id), rig.labels(job_id), Behaviour(output=(b"so far\n",), runs_for_s=3600), 50
    )

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["logs"]) == ("timeout", "so far\n")
    assert "logs" in rig.events and not any(e.startswith(("create", "attach", "start")) for e in rig.events)
    assert result["durationMs"] == 60_000  # 50 s before the worker came, 10 s after


def test_a_container_created_but_never_started_is_replaced(rig: Rig) -> None:
    job_id = rig.job()
    stale = rig.runtime.leftover(container_name(job_id), rig.labels(job_id), Behaviour(output=(b"stale\n",)), None)

    rig.runner.run(job_id)

    assert rig.result(job_id)["logs"] == "done\n"
    assert rig.events[:2] == ["remove", f"create {container_name(job_id)}"] and stale not in rig.runtime.containers


def test_an_engine_failure_ends_the_job_with_an_error_result(rig: Rig) -> None:
    job_id = rig.job()
    rig.runtime.failures["start"] = ContainerError("start failed: no space left on device")

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["logs"]) == ("error", "start failed: no space left on device")
    assert result["reason"] == "engine_error"
    assert rig.events[-3:] == ["keep_result", "remove", "finish"]  # its container goes too


def test_a_job_whose_container_name_another_worker_took_is_left_to_it(rig: Rig) -> None:
    job_id = rig.job()
    rig.runtime.failures["create"] = NameTaken(f"container {container_name(job_id)} exists already")

    rig.runner.run(job_id)

    assert "finish" not in rig.events and "keep_result" not in rig.events


def test_a_result_kept_before_a_crash_is_published_as_kept(rig: Rig) -> None:
    job_id = rig.job()
    kept = {"id": job_id, "status": "completed", "exitCode": 0, "logs": "from before"}
    rig.store.jobs.hashes[job_id] |= {"state": "running", "host": NODE, "slot": "0", "pending_result": json.dumps(kept)}

    rig.runner.run(job_id)

    assert rig.result(job_id) == kept
    assert not any(e.startswith("create") for e in rig.events)


def test_a_finished_job_and_one_a_live_worker_holds_are_not_run(rig: Rig) -> None:
    finished = rig.job("done")
    rig.runner.run(finished)
    held = rig.job("held")
    rig.store.jobs.hashes[held] |= {"state": "running", "host": NODE, "slot": "1", "attempt": "1"}
    rig.store.jobs.live_holders.add((NODE, "1"))
    rig.events.clear()

    rig.runner.run(finished)
    rig.runner.run(held)

    assert rig.events == []
    assert rig.store.jobs.hashes[held]["slot"] == "1"


def test_recovery_resumes_the_slots_interrupted_jobs_then_reaps_only_its_own_leftovers(rig: Rig) -> None:
    interrupted = rig.job("interrupted")
    rig.store.jobs.hashes[interrupted] |= {"state": "running", "host": NODE, "slot": "0", "attempt": "1"}
    rig.runtime.leftover(container_name(interrupted), rig.labels(interrupted), Behaviour(output=(b"resumed\n",)), 5)
    finished = rig.job("finished")
    rig.runner.run(finished)
    finished_left = rig.runtime.leftover("old", rig.labels(finished), Behaviour(), None)
    prep_labels = {LABEL_NODE: NODE, LABEL_NODE_ID: NODE_IDENTITY, LABEL_WORKER: "0", LABEL_ROLE: PREP_ROLE}
    prep = rig.runtime.leftover("prep", prep_labels, Behaviour(), 1)
    other_slot = rig.runtime.leftover("x", rig.labels("unknown", slot=1), Behaviour(), 1)
    other_host = rig.runtime.leftover("y", rig.labels("unknown", node="another-rig"), Behaviour(), 1)
    # Another node on the same engine: same host name, same slot, a job of the same id; never touched.
    other_node = rig.runtime.leftover("z", rig.labels(finished, identity="ba9876543210"), Behaviour(), 1)

    recover(rig.runner, rig.runtime, rig.store)  # type: ignore[arg-type]

    assert rig.result(interrupted)["logs"] == "resumed\n"
    assert set(rig.runtime.containers) == {other_slot, other_host, other_node}
    assert finished_left not in rig.runtime.containers and prep not in rig.runtime.containers


def test_an_engine_restart_mid_job_ends_it_with_one_engine_restarted_error(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(runs_for_s=30))
    rig.runtime.outage = (10, 20, False)  # no live-restore: stopping, the engine stops the container

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["reason"], result["logs"]) == (
        "error",
        "engine_restarted",
        "the Docker engine restarted",
    )
    assert [e for e in rig.events if e == "finish"] == ["finish"]
    assert rig.runtime.containers == {}  # removed once the engine answered again


def test_a_container_live_restore_kept_is_reattached_and_its_job_completes(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(output=(b"still here\n",), runs_for_s=30))
    rig.runtime.outage = (10, 5, True)

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["exitCode"], result["logs"]) == ("completed", 0, "still here\n")
    assert "logs" in rig.events  # followed again from the log driver


def test_an_engine_that_never_comes_back_ends_the_job_with_an_engine_error(rig: Rig) -> None:
    job_id = rig.job(behaviour=Behaviour(runs_for_s=30), timeout=20)
    rig.runtime.outage = (5, 10_000, False)

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["reason"]) == ("error", "engine_error")
    assert "did not come back" in result["logs"]


def test_a_container_under_the_jobs_name_that_names_another_node_is_never_reattached_nor_removed(rig: Rig) -> None:
    job_id = rig.job()
    foreign = rig.runtime.leftover(
        container_name(job_id), rig.labels(job_id, identity="ba9876543210"), Behaviour(output=(b"private\n",)), 5
    )

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert (result["status"], result["reason"]) == ("error", "engine_error")
    assert "belongs to another node" in result["logs"] and "private" not in result["logs"]
    assert foreign in rig.runtime.containers
    assert not any(e.startswith(("logs", "remove", "create")) for e in rig.events)


def test_job_containers_are_named_after_the_nodes_identity(rig: Rig) -> None:
    job_id = rig.job()

    rig.runner.run(job_id)

    assert f"create hn-job-{NODE_IDENTITY}-{job_id}" in rig.events


@pytest.mark.parametrize(("pin", "status"), [("fa" * 32, "completed"), ("0b" * 32, "error")])
def test_an_image_allowed_only_by_a_pinned_digest_runs_only_if_it_is_that_image(pin: str, status: str) -> None:
    settings = Settings.from_env(
        {"HN_JOB_IMAGE": "img", "HN_NODE_NAME": NODE, "HN_ALLOWED_IMAGES": f"ghcr.io/acme/train@sha256:{pin}"}
    )
    rig = Rig()
    rig.runner = JobRunner(settings, rig.store, rig.runtime, NodeKey.generate(), SLOTS[0], SLOTS, clock=rig.clock)  # type: ignore[arg-type]
    job_id = rig.job(image="ghcr.io/acme/train:1")

    rig.runner.run(job_id)

    result = rig.result(job_id)
    assert result["status"] == status
    if status == "error":
        assert result["reason"] == "image_not_allowed" and "is not the one this node pins" in result["logs"]
        assert not any(e.startswith("create") for e in rig.events)
