"""A node with 4 simulated GPUs, end to end: reference backend → bridge → one worker per GPU → containers.

One node (`hypernode-host up`, HN_SIMULATE_GPUS=4, no CPU slot) serves the module. Each job
prints the GPUs it was given (NVIDIA_VISIBLE_DEVICES, which the runner sets from the slot it
ran on) so the tests can tell which job got which GPU and when.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from gpu_support import assert_no_gpu_shared_at_once, gpu_job, gpus_seen, live, max_overlap, wait_for_slots

from hypernode_host.backend.harness import BackendThread
from hypernode_host.errors import ContainerError
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.settings import Settings
from hypernode_host.state.gpuflags import GpuFlags
from hypernode_host.tasks.containers import LABEL_GPUS, LABEL_NODE, DockerRuntime
from support import NodeProcess, job_containers, node_stack, wait_for


def running(runtime: DockerRuntime, container_id: str) -> bool:
    """Whether a listed container runs; one removed since it was listed (its job just ended) does not."""
    try:
        return runtime.state(container_id).running
    except ContainerError:
        return False


class GpuNode:
    def __init__(self, backend: BackendThread, node: NodeProcess, redis_url: str) -> None:
        self.backend = backend
        self.node = node
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.settings = Settings.from_env({k: v for k, v in node.env.items() if k.startswith("HN_")})
        self.uuids = [g.uuid for g in simulated_gpus("4", seed=node.node_name)]

    def run_all(self, jobs: list[dict[str, Any]], wait_s: float = 90) -> list[dict[str, Any]]:
        for job in jobs:
            self.backend.send_job(job)
        return self.collect(jobs, wait_s)

    def collect(self, jobs: list[dict[str, Any]], wait_s: float = 90) -> list[dict[str, Any]]:
        try:
            return [self.backend.wait_for_result(job["id"], wait_s) for job in jobs]
        except TimeoutError:
            raise AssertionError(f"results missing; node output:\n{self.node.output()[-4000:]}") from None


@pytest.fixture(scope="module")
def gpu_node(docker_runtime: DockerRuntime) -> Iterator[GpuNode]:
    with (
        node_stack(HN_SIMULATE_GPUS="4", HN_CPU_SLOTS="0", HN_JOB_TIMEOUT="60") as (redis_server, backend, env),
        NodeProcess(env) as node,
    ):
        backend.wait_for_node(timeout=30)
        harness = GpuNode(backend, node, redis_server.url)
        wait_for_slots(harness.redis, node.node_name, 4)
        yield harness
        harness.redis.close()
        assert node.stop() == 0, node.output()[-3000:]
        assert job_containers(node.node_name) == []


def test_eight_one_gpu_jobs_run_four_at_a_time_each_on_its_own_gpu(gpu_node: GpuNode) -> None:
    jobs = [gpu_job(seconds=4) for _ in range(8)]
    for job in jobs:
        gpu_node.backend.send_job(job)

    # While the first four run, docker shows each container labelled with a different GPU.
    def running_labels() -> list[str]:
        runtime = DockerRuntime()
        labelled = runtime.labelled(LABEL_NODE, gpu_node.node.node_name)
        return [labels[LABEL_GPUS] for cid, labels in labelled if running(runtime, cid)]

    on_gpus = wait_for(lambda: (labels := running_labels()) and len(labels) == 4 and labels, timeout=60)
    assert sorted(on_gpus) == sorted(gpu_node.uuids)

    results = gpu_node.collect(jobs)

    assert [r["status"] for r in results] == ["completed"] * 8, results
    assert all(gpu_node.backend.verification(r["id"]).verified for r in results)  # type: ignore[union-attr]
    seen = [gpus_seen(r) for r in results]
    assert all(len(s) == 1 and s[0] in gpu_node.uuids for s in seen), seen
    assert {s[0] for s in seen} == set(gpu_node.uuids)  # every GPU worked
    assert_no_gpu_shared_at_once(results)
    assert max_overlap(results) == 4  # four at a time: never more (one job per slot), and not fewer


def test_a_job_asking_for_more_vram_than_any_gpu_has_is_refused(gpu_node: GpuNode) -> None:
    [result] = gpu_node.run_all([gpu_job(gpuMemoryMb=30000)])

    assert (result["status"], result["reason"]) == ("error", "no_capacity")
    assert result["logs"] == "job needs 30000 MiB of GPU memory; no GPU here has that much (largest 24576 MiB)"


def test_heartbeat_utilization_follows_the_job_on_each_gpu(gpu_node: GpuNode) -> None:
    node_id, host = gpu_node.backend.wait_for_node(), gpu_node.node.node_name

    def utilization() -> dict[str, int]:
        beats = gpu_node.backend.heartbeats(node_id)
        return {g["uuid"]: g["utilization_pct"] for g in beats[-1].stats["gpus"]} if beats else {}

    def busy() -> set[str]:
        return {uuid for uuid, pct in utilization().items() if pct > 0}

    wait_for(lambda: utilization() and not busy(), timeout=30)  # earlier tests' jobs are gone
    job = gpu_job(seconds=6)
    gpu_node.backend.send_job(job)
    running = wait_for(lambda: next((r for r in live(gpu_node.redis, host).values() if r.job == job["id"]), None))
    [busy_uuid] = running.job_gpus

    # That GPU alone reads busy while the job runs on it.
    beat = wait_for(lambda: (u := utilization()) and {k for k, pct in u.items() if pct} == {busy_uuid} and u, 15)
    assert 85 <= beat[busy_uuid] <= 99
    assert sorted(beat) == sorted(gpu_node.uuids)

    assert gpu_node.backend.wait_for_result(job["id"], 60)["status"] == "completed"
    wait_for(lambda: not busy(), timeout=15)


def test_a_gpu_marked_lost_stops_getting_jobs_until_it_is_back(gpu_node: GpuNode) -> None:
    host, lost = gpu_node.node.node_name, gpu_node.uuids[3]
    flags = GpuFlags(gpu_node.redis)
    flags.mark_lost(lost, "fell off the bus (test)")
    try:
        sick = wait_for(lambda: not (r := live(gpu_node.redis, host)[3]).healthy and r, timeout=30)
        assert sick.health == f"{lost}: marked lost: fell off the bus (test)"
        [gpu] = [g for g in discover(gpu_node.settings) if g.uuid == lost]
        assert not gpu.healthy and gpu.health == "marked lost: fell off the bus (test)"

        results = gpu_node.run_all([gpu_job(seconds=1) for _ in range(6)])

        assert [r["status"] for r in results] == ["completed"] * 6
        assert {gpus_seen(r)[0] for r in results} <= set(gpu_node.uuids[:3])
        assert "slot 3 (GPU 3 Simulated-GPU) takes no jobs" in gpu_node.node.output()
    finally:
        flags.clear_lost(lost)

    wait_for(lambda: live(gpu_node.redis, host)[3].healthy, timeout=30)
    results = gpu_node.run_all([gpu_job(seconds=4) for _ in range(4)])
    assert {gpus_seen(r)[0] for r in results} == set(gpu_node.uuids)  # slot 3 takes jobs again
