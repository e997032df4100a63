"""The runner's GPU decisions on fakes: the CUDA requirement before any container, the poison-job breaker
(a GPU that fails under a job ends it gpu_lost and quarantines its workload), the quarantine's refusals."""

from __future__ import annotations

from typing import Any

from fakes import NODE_IDENTITY, Behaviour, FakeClock, FakeRuntime, FakeStore

from hypernode_host.core.cuda import Driver
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import plan_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.settings import Settings
from hypernode_host.tasks.runner import JobRunner, container_name

NODE = "rig"
SETTINGS = Settings.from_env(
    {"HN_JOB_IMAGE": "img", "HN_NODE_NAME": NODE, "HN_JOB_TIMEOUT": "600", "HN_POISON_QUARANTINE": "900"}
)
DRIVER = Driver("550.54", "12.4")
SLOTS = plan_slots(simulated_gpus("2", seed=NODE, driver=DRIVER), 0)
LOST = f"{SLOTS[0].gpu_uuids[0]}: critical Xid 79 reported by the driver"


class FakeWatch:
    """The worker's watch: a driver, and a fault that appears once the clock passes ``fails_at``."""

    def __init__(self, clock: FakeClock, fails_at: float | None = None) -> None:
        self.clock = clock
        self.fails_at = fails_at
        self.current = DRIVER

    def driver(self) -> Driver | None:
        return self.current

    def fault(self, fresh: bool = False) -> str | None:
        return LOST if self.fails_at is not None and self.clock.now >= self.fails_at else None


class GpuRig:
    def __init__(self, fails_after_s: float | None = None) -> None:
        self.events: list[str] = []
        self.clock = FakeClock()
        self.runtime = FakeRuntime(self.clock, self.events)
        self.store = FakeStore(self.events)
        fails_at = None if fails_after_s is None else self.clock.now + fails_after_s
        self.watch = FakeWatch(self.clock, fails_at)
        self.runners = [
            JobRunner(
                SETTINGS, self.store, self.runtime, NodeKey.generate(), slot, SLOTS, clock=self.clock, watch=self.watch
            )  # type: ignore[arg-type]
            for slot in SLOTS
        ]

    def run(self, job_id: str, slot: int = 0, behaviour: Behaviour | None = None, **fields: Any) -> dict[str, Any]:
        job = {"id": job_id, "command": "train", "gpuRequired": True, "memoryLimit": "128m", "cpuLimit": 1, **fields}
        self.store.jobs.record(job_id, job, "hn-gpu1")
        if behaviour is not None:
            self.runtime.behaviours[container_name(NODE_IDENTITY, job_id)] = behaviour
        self.runners[slot].run(job_id)
        record = self.store.jobs.get(job_id)
        assert record is not None and record.done, record
        return record.result()


def test_an_image_needing_a_newer_cuda_is_refused_before_any_container() -> None:
    rig = GpuRig()
    rig.runtime.image_envs["sha256:fake"] = ["NVIDIA_REQUIRE_CUDA=cuda>=12.8", "CUDA_VERSION=12.8.0"]

    result = rig.run("new-cuda")

    assert (result["status"], result["reason"]) == ("error", "cuda_incompatible")
    assert result["logs"] == (
        "image img: the image needs cuda>=12.8 (requires 'cuda>=12.8'); "
        "this GPU's driver 550.54 supports CUDA 12.4 at most"
    )
    assert not any(e.startswith("create") for e in rig.events)

    rig.runtime.image_envs["sha256:fake"] = ["CUDA_VERSION=12.4.1"]
    assert rig.run("same-cuda")["status"] == "completed"


def test_a_job_whose_gpu_fails_ends_gpu_lost_and_its_workload_is_refused_on_the_other_gpus() -> None:
    rig = GpuRig(fails_after_s=30)

    lost = rig.run("poison", behaviour=Behaviour(runs_for_s=300))

    assert (lost["status"], lost["reason"]) == ("failed", "gpu_lost")
    assert lost["gpuFault"].startswith(LOST + "; workload ")
    assert lost["gpuFault"].endswith(
        "is refused on this node's GPUs for 900 s (`hypernode-host gpus --clear-quarantine`)"
    )
    assert any(e.startswith("stop") for e in rig.events)  # stopped at the fault, not left to its deadline
    [held] = rig.store.quarantine.held.values()
    assert (held.job_id, held.gpu, held.reason) == ("poison", SLOTS[0].gpu_uuids[0], LOST)

    rig.watch.fails_at = None  # the other GPU is fine; the same code under a new id is the same workload
    again = rig.run("poison-again", slot=1)
    assert (again["status"], again["reason"]) == ("error", "quarantined")
    assert again["logs"] == (
        f"workload {held.workload} is quarantined on this node for 900 s more: "
        f"a GPU failed while job poison of the same image and code ran ({LOST})"
    )

    assert rig.run("other-code", slot=1, command="evaluate")["status"] == "completed"
    assert rig.store.quarantine.clear(NODE) == 1
    assert rig.run("poison-cleared", slot=1)["status"] == "completed"


def test_a_gpu_that_fails_as_the_job_exits_still_makes_it_gpu_lost() -> None:
    rig = GpuRig(fails_after_s=5)

    result = rig.run("crashed", behaviour=Behaviour(runs_for_s=5, exit_code=1))

    assert (result["status"], result["reason"]) == ("failed", "gpu_lost")


def test_the_breaker_set_to_zero_reports_the_fault_but_quarantines_nothing() -> None:
    rig = GpuRig(fails_after_s=1)
    for runner in rig.runners:
        runner.settings = SETTINGS.model_copy(update={"poison_quarantine": 0})

    result = rig.run("poison", behaviour=Behaviour(runs_for_s=60))

    assert result["reason"] == "gpu_lost" and "the breaker is off" in result["gpuFault"]
    assert rig.store.quarantine.held == {}
