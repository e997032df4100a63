"""k-GPU slots and a node spread over two hosts, with real worker processes and real containers.

"Sharing the queue" means one node (one backend registration, one token, one node key, one
Redis) whose workers run on several hosts: host A runs `hypernode-host up` (the bridge and its
own workers); host B runs only workers (`hypernode-host worker --slot N`, its own HN_NODE_NAME
and simulated GPUs, HN_REDIS_URL pointing at A's password-protected Redis, A's key file). Both
hosts' workers consume the same Dramatiq queues. Two bridges on one Redis would share one
outbox, so two `up`s are two nodes and need two Redis instances.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from gpu_support import DirectQueue, gpu_job, gpus_seen, max_overlap, password_redis, wait_for_slots

from hypernode_host.backend.harness import BackendThread
from hypernode_host.core.admission import admit
from hypernode_host.core.jobs import JobSpec
from hypernode_host.errors import JobRejected
from hypernode_host.gpu.capacity import serving_slots
from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, job_containers, node_env


def workers(env: dict[str, str], slots: int, stack: ExitStack) -> list[NodeProcess]:
    return [stack.enter_context(NodeProcess(env, ("worker", "--slot", str(i)))) for i in range(slots)]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env({k: v for k, v in env.items() if k.startswith("HN_")})


@pytest.fixture
def two_gpu_slots(docker_runtime: DockerRuntime, tmp_path: Path) -> Iterator[DirectQueue]:
    with RedisProcess() as redis_server, ExitStack() as stack:
        env = node_env(redis_server.url, "ws://127.0.0.1:9", "unused", tmp_path, HN_SIMULATE_GPUS="4",
                       HN_GPUS_PER_WORKER="2", HN_CPU_SLOTS="0")  # fmt: skip
        procs = workers(env, 2, stack)
        client = stack.enter_context(redis.Redis.from_url(redis_server.url, decode_responses=True))
        wait_for_slots(client, env["HN_NODE_NAME"], 2)
        queue = DirectQueue(settings_of(env))
        yield queue
        queue.close()
        assert [p.stop() for p in procs] == [0, 0], procs[0].output()[-2000:]
        assert job_containers(env["HN_NODE_NAME"]) == []


def test_two_gpu_jobs_go_to_two_gpu_slots(two_gpu_slots: DirectQueue) -> None:
    queue = two_gpu_slots
    slots = plan_node_slots(queue.settings)
    pairs = {slot.gpu_uuids for slot in slots}
    jobs = [gpu_job(seconds=3, gpuCount=2), gpu_job(seconds=3, gpuCount=2)]

    assert {queue.submit(job, slots) for job in jobs} == {"hn-gpu2"}
    results = [queue.result(job["id"]) for job in jobs]

    assert [r["status"] for r in results] == ["completed", "completed"]
    assert {gpus_seen(r) for r in results} == pairs  # each ran on both GPUs of its own slot
    assert max_overlap(results) == 2
    one = gpu_job()  # a one-GPU job on a node of two-GPU slots gets the first GPU of a slot
    queue.submit(one, slots)
    assert gpus_seen(queue.result(one["id"]))[0] in {pair[0] for pair in pairs}
    with pytest.raises(JobRejected, match=r"^job needs 3 GPU\(s\); this node's GPU slots hold 2$"):
        queue.submit(gpu_job(gpuCount=3), slots)


def test_a_second_host_joins_through_the_first_hosts_redis(docker_runtime: DockerRuntime, tmp_path: Path) -> None:
    token = f"tok-{secrets.token_hex(8)}"
    with (
        password_redis() as redis_url,
        BackendThread("127.0.0.1", 0, [token]) as backend,
        tempfile.TemporaryDirectory() as workdir,
        ExitStack() as stack,
    ):
        env_a = node_env(redis_url, backend.url, token, Path(workdir), HN_SIMULATE_GPUS="1xRTX4090:24576",
                         HN_CPU_SLOTS="0")  # fmt: skip
        env_b = {**env_a, "HN_NODE_NAME": f"rig-b-{secrets.token_hex(3)}", "HN_SIMULATE_GPUS": "2xA100:81920"}
        del env_b["HN_NODE_TOKEN"]  # host B runs no bridge: it never needs the token
        host_a = stack.enter_context(NodeProcess(env_a))
        host_b = workers(env_b, 2, stack)
        client = stack.enter_context(redis.Redis.from_url(redis_url, decode_responses=True))
        backend.wait_for_node(timeout=30)
        wait_for_slots(client, env_a["HN_NODE_NAME"], 1)
        wait_for_slots(client, env_b["HN_NODE_NAME"], 2)
        gpus_a = {g.uuid for g in simulated_gpus("1xRTX4090:24576", seed=env_a["HN_NODE_NAME"])}
        gpus_b = {g.uuid for g in simulated_gpus("2xA100:81920", seed=env_b["HN_NODE_NAME"])}

        jobs = [gpu_job(seconds=4) for _ in range(3)]
        for job in jobs:
            backend.send_job(job)
        results = [backend.wait_for_result(job["id"], 90) for job in jobs]

        assert [r["status"] for r in results] == ["completed"] * 3, host_a.output()[-3000:]
        assert all(backend.verification(r["id"]).verified for r in results)  # type: ignore[union-attr]
        assert {gpus_seen(r)[0] for r in results} == gpus_a | gpus_b  # one queue, three slots, two hosts
        assert max_overlap(results) == 3

        # A job only host B's A100s can hold: routed with the live registrations to the memory
        # queue that only B's workers consume (what the bridge admits against, with capacity).
        settings_a = settings_of(env_a)
        slots = serving_slots(plan_node_slots(settings_a), Store(client).registry.all(), env_a["HN_NODE_NAME"])
        big = gpu_job(gpuMemoryMb=40000)
        with pytest.raises(JobRejected, match="no GPU here has that much"):
            admit(JobSpec.parse(big), settings_a, plan_node_slots(settings_a))  # host A alone cannot
        queue = DirectQueue(settings_a)
        try:
            assert queue.submit(big, slots) == "hn-gpu1-81920mib"
            assert gpus_seen(queue.result(big["id"]))[0] in gpus_b
        finally:
            queue.close()

        assert host_a.stop() == 0, host_a.output()[-3000:]
        assert [p.stop() for p in host_b] == [0, 0], host_b[0].output()[-3000:]
        assert job_containers(env_a["HN_NODE_NAME"]) == job_containers(env_b["HN_NODE_NAME"]) == []
