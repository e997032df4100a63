"""The GPU faults operators hit, driven on simulated GPUs through `hypernode-host sim-gpu`, end to end.

One node (`hypernode-host up`, two simulated GPUs, driver 550.54 with CUDA 12.4, no CPU slot) serves
the module: the reference backend sends the jobs, `sim-gpu` changes a GPU's state through the
node's Redis, and the operator's commands (`check`, `top`, `doctor`, `gpus`) are run as an operator
runs them. Each test leaves every GPU serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from gpu_support import gpu_job, gpus_seen, live, wait_for_slots

from hypernode_host.backend.harness import BackendThread
from hypernode_host.core.slots import SlotState
from hypernode_host.gpu.simulated import simulated_gpus, start_driver
from hypernode_host.tasks.containers import DockerRuntime
from support import TEST_IMAGE, NodeProcess, job_containers, node_stack, wait_for

CUDA_IMAGE = "hn-test/cuda-needs:12.8"  # TEST_IMAGE stating that it needs CUDA 12.8, as nvidia/cuda images do
CUDA_OK_IMAGE = "hn-test/cuda-needs:12.4"


def build_cuda_image(tag: str, require: str) -> None:
    """A local image FROM the job image with only its CUDA requirement added (no network needed)."""
    dockerfile = f'FROM {TEST_IMAGE}\nENV NVIDIA_REQUIRE_CUDA="{require}" CUDA_VERSION=12.8.0\n'
    done = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


class FaultNode:
    def __init__(self, backend: BackendThread, node: NodeProcess, redis_url: str) -> None:
        self.backend = backend
        self.node = node
        self.host = node.node_name
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.uuids = [g.uuid for g in simulated_gpus("2", seed=self.host, driver=start_driver("550.54/12.4"))]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hypernode_host", *args],
            capture_output=True,
            text=True,
            env={"COLUMNS": "240", **self.node.env},
            timeout=60,
            check=False,
        )

    def sim(self, *args: str) -> str:
        done = self.cli("sim-gpu", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        return json.loads(done.stdout)

    def states(self) -> dict[int, SlotState]:
        return {slot: r.state for slot, r in live(self.redis, self.host).items()}

    def wait_states(self, *states: SlotState) -> None:
        wait_for(lambda: self.states() == dict(enumerate(states)), timeout=30)

    def result(self, job: dict[str, Any], wait_s: float = 90) -> dict[str, Any]:
        try:
            return self.backend.wait_for_result(job["id"], wait_s)
        except TimeoutError:
            raise AssertionError(f"no result for {job['id']}; node output:\n{self.node.output()[-4000:]}") from None

    def beat(self) -> dict[str, Any]:
        beats = self.backend.heartbeats(self.backend.wait_for_node())
        return beats[-1].stats if beats else {}

    def send(self, job: dict[str, Any]) -> dict[str, Any]:
        self.backend.send_job(job)
        return job

    def running_on(self, job: dict[str, Any]) -> int:
        """The slot the job runs on, once it does."""
        [slot] = wait_for(lambda: [s for s, r in live(self.redis, self.host).items() if r.job == job["id"]])
        return int(slot)


@pytest.fixture(scope="module")
def fault_node(docker_runtime: DockerRuntime) -> Iterator[FaultNode]:
    build_cuda_image(CUDA_IMAGE, "cuda>=12.8 brand=tesla,driver>=470,driver<471")
    build_cuda_image(CUDA_OK_IMAGE, "cuda>=12.4")
    with (
        node_stack(
            HN_SIMULATE_GPUS="2",
            HN_SIMULATE_DRIVER="550.54/12.4",
            HN_CPU_SLOTS="0",
            HN_JOB_TIMEOUT="120",
            HN_POISON_QUARANTINE="600",
            HN_ALLOWED_IMAGES="hn-test/cuda-needs:*",
        ) as (redis_server, backend, env),
        NodeProcess(env) as node,
    ):
        backend.wait_for_node(timeout=30)
        harness = FaultNode(backend, node, redis_server.url)
        wait_for_slots(harness.redis, node.node_name, 2)
        yield harness
        harness.redis.close()
        assert node.stop() == 0, node.output()[-3000:]
        assert job_containers(node.node_name) == []


def test_the_driver_and_its_cuda_version_are_advertised(fault_node: FaultNode) -> None:
    beat = wait_for(lambda: (b := fault_node.beat()) and b.get("driver_version") and b, timeout=30)
    assert (beat["driver_version"], beat["cuda_version"]) == ("550.54", "12.4")
    assert {(g["driver_version"], g["cuda_version"]) for g in beat["gpus"]} == {("550.54", "12.4")}
    [registered] = fault_node.backend.nodes()
    assert (registered["hostInfo"]["driver_version"], registered["hostInfo"]["cuda_version"]) == ("550.54", "12.4")
    listed = fault_node.json("gpus")
    assert {(g["driver_version"], g["cuda_version"]) for g in listed["gpus"]} == {("550.54", "12.4")}


def test_an_image_needing_a_newer_cuda_is_refused_before_it_runs(fault_node: FaultNode) -> None:
    refused = fault_node.result(fault_node.send(gpu_job(image=CUDA_IMAGE)))
    fine = fault_node.result(fault_node.send(gpu_job(image=CUDA_OK_IMAGE)))

    assert (refused["status"], refused["reason"]) == ("error", "cuda_incompatible")
    assert refused["logs"].startswith(f"image {CUDA_IMAGE}: the image needs cuda>=12.8 (requires 'cuda>=12.8 brand")
    assert refused["logs"].endswith("this GPU's driver 550.54 supports CUDA 12.4 at most")
    assert refused["startedAt"] == refused["completedAt"]  # no container ever ran
    assert fine["status"] == "completed", fine


def test_a_driver_change_drains_the_gpu_slots_says_why_and_recovers(fault_node: FaultNode) -> None:
    running = fault_node.send(gpu_job(seconds=8))
    fault_node.running_on(running)

    assert "driver 555.42 (CUDA 12.5)" in fault_node.sim("0", "--driver", "555.42", "--cuda", "12.5")
    try:
        fault_node.wait_states(SlotState.DRAINING, SlotState.DRAINING)
        waiting = fault_node.send(gpu_job())
        # Why, everywhere an operator or the backend looks: check, top, the heartbeat, doctor.
        check = fault_node.cli("check")
        assert check.returncode == 1
        assert "takes no jobs (draining): the GPU driver changed from 550.54 (CUDA 12.4) to 555.42 (CUDA 12.5)" in (
            check.stderr
        )
        assert "(fix: reboot the host" in check.stderr and "`apt-mark hold` the driver packages" in check.stderr
        workers = fault_node.json("top")["workers"]
        assert {w["state"] for w in workers} == {"draining"}
        assert all("apt-mark hold" in w["health"] for w in workers)
        beat = wait_for(lambda: (b := fault_node.beat()) and len(b["unhealthy_slots"]) == 2 and b, timeout=30)
        assert all(": draining: the GPU driver changed" in line for line in beat["unhealthy_slots"])
        assert (beat["driver_version"], beat["cuda_version"]) == ("555.42", "12.5")
        [doctor] = [c for c in fault_node.json("doctor")["checks"] if c["part"] == "gpu-driver"]
        assert doctor["level"] == "fail" and "2 slot(s) draining" in doctor["detail"]
        assert "apt-mark hold" in doctor["fix"]

        assert fault_node.result(running)["status"] == "completed"  # the running job finished
        refused = fault_node.result(waiting)  # no new one: no GPU slot of the node takes jobs
        assert (refused["status"], refused["reason"]) == ("error", "no_capacity")
    finally:
        fault_node.sim("0", "--driver", "550.54", "--cuda", "12.4")

    fault_node.wait_states(SlotState.SERVING, SlotState.SERVING)
    assert fault_node.result(fault_node.send(gpu_job()))["status"] == "completed"
    assert fault_node.cli("check").returncode == 0


def test_a_gpu_running_a_foreign_process_is_busy_not_unhealthy_until_it_is_free(fault_node: FaultNode) -> None:
    fault_node.sim("1", "--busy")
    try:
        fault_node.wait_states(SlotState.SERVING, SlotState.BUSY)
        busy = live(fault_node.redis, fault_node.host)[1]
        assert busy.healthy and busy.health == f"{fault_node.uuids[1]}: 1 compute process(es) the node did not start"
        beat = wait_for(lambda: (b := fault_node.beat()) and b["busy_slots"] and b, timeout=30)
        assert beat["unhealthy_slots"] == [] and len(beat["busy_slots"]) == 1
        assert all(g["healthy"] for g in beat["gpus"])
        check = fault_node.cli("check")
        assert check.returncode == 0 and "busy, takes no jobs" in check.stdout

        results = [fault_node.result(fault_node.send(gpu_job(seconds=1))) for _ in range(3)]
        assert {gpus_seen(r)[0] for r in results} == {fault_node.uuids[0]}
    finally:
        fault_node.sim("1", "--idle")
    fault_node.wait_states(SlotState.SERVING, SlotState.SERVING)


def test_a_job_during_which_its_gpu_fails_ends_gpu_lost_and_its_workload_is_quarantined(fault_node: FaultNode) -> None:
    poison = gpu_job(seconds=60)
    slot = fault_node.running_on(fault_node.send(poison))
    other = 1 - slot

    assert "Xid 79 reported" in fault_node.sim(str(slot), "--xid", "79")
    try:
        lost = fault_node.result(poison)
        assert (lost["status"], lost["reason"]) == ("failed", "gpu_lost")
        assert lost["gpuFault"].startswith(
            f"{fault_node.uuids[slot]}: critical Xid 79 reported by the driver; workload "
        )
        assert "refused on this node's GPUs for 600 s" in lost["gpuFault"]
        fault_node.wait_states(*[SlotState.UNHEALTHY if s == slot else SlotState.SERVING for s in range(2)])

        # The same code under another id, on the other (healthy) GPU: refused; other code runs there.
        again = fault_node.result(fault_node.send({**poison, "id": poison["id"] + "-again"}))
        assert (again["status"], again["reason"]) == ("error", "quarantined")
        assert f"a GPU failed while job {poison['id']} of the same image and code ran" in again["logs"]
        assert gpus_seen(fault_node.result(fault_node.send(gpu_job())))[0] == fault_node.uuids[other]

        [held] = fault_node.json("gpus")["quarantine"]
        assert (held["job_id"], held["gpu"]) == (poison["id"], fault_node.uuids[slot])
        listed = fault_node.cli("gpus")
        assert f"quarantined workload {held['workload']}" in listed.stdout
        cleared = fault_node.cli("gpus", "--clear-quarantine")
        assert cleared.returncode == 0 and "cleared 1 quarantined workload(s)" in cleared.stdout
        assert fault_node.json("gpus")["quarantine"] == []
    finally:
        fault_node.sim(str(slot), "--healthy")
    fault_node.wait_states(SlotState.SERVING, SlotState.SERVING)
    assert (
        fault_node.result(fault_node.send({**poison, "id": poison["id"] + "-cleared", "command": "echo gpus=x"}))[
            "status"
        ]
        == "completed"
    )


def test_a_gpu_that_falls_off_the_bus_stops_taking_jobs_until_it_is_healthy(fault_node: FaultNode) -> None:
    assert "lost" in fault_node.sim("0", "--lost")
    try:
        fault_node.wait_states(SlotState.UNHEALTHY, SlotState.SERVING)
        sick = live(fault_node.redis, fault_node.host)[0]
        assert sick.health == f"{fault_node.uuids[0]}: marked lost: GPU has fallen off the bus (sim-gpu --lost)"
        check = fault_node.cli("check")
        assert check.returncode == 1 and "takes no jobs (unhealthy)" in check.stderr
    finally:
        fault_node.sim("0", "--healthy")
    fault_node.wait_states(SlotState.SERVING, SlotState.SERVING)


def test_sim_gpu_refuses_what_it_cannot_do(fault_node: FaultNode) -> None:
    assert (
        fault_node.cli("sim-gpu", "7", "--lost").stderr.strip() == "error: GPU 7: this node's simulated GPUs are 0..1"
    )
    assert "exactly one of" in fault_node.cli("sim-gpu", "0", "--lost", "--busy").stderr
    assert "go together" in fault_node.cli("sim-gpu", "0", "--driver", "555.42").stderr
    assert "not a driver/CUDA pair" in fault_node.cli("sim-gpu", "0", "--driver", "x", "--cuda", "12.5").stderr
