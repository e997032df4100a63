"""MIG instances as slots, end to end on a simulated A100 in MIG mode: one slot per instance, by MIG UUID.

The node (`hypernode-host up`, HN_SIMULATE_GPUS=1xA100:81920:mig=3g.40gb+3g.40gb, no CPU slot) runs
one worker per instance; each job prints the devices it was given (NVIDIA_VISIBLE_DEVICES, set from
its slot, as device_requests is on a GPU rig), which must be exactly one instance's MIG UUID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from gpu_support import assert_no_gpu_shared_at_once, gpu_job, gpus_seen, live, max_overlap, wait_for_slots

from hypernode_host.backend.harness import BackendThread
from hypernode_host.core.slots import SlotState
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, job_containers, node_stack, wait_for

SPEC = "1xA100:81920:mig=3g.40gb+3g.40gb"


@dataclass
class MigNode:
    node: NodeProcess
    backend: BackendThread
    redis: redis.Redis


@pytest.fixture(scope="module")
def mig_node(docker_runtime: DockerRuntime) -> Iterator[MigNode]:
    with (
        node_stack(HN_SIMULATE_GPUS=SPEC, HN_CPU_SLOTS="0", HN_JOB_TIMEOUT="60") as (redis_server, backend, env),
        NodeProcess(env) as node,
    ):
        backend.wait_for_node(timeout=30)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        wait_for_slots(client, node.node_name, 2)
        yield MigNode(node, backend, client)
        client.close()
        assert node.stop() == 0, node.output()[-3000:]
        assert job_containers(node.node_name) == []


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args],
        capture_output=True,
        text=True,
        env=node.env,
        timeout=60,
        check=False,
    )


def test_each_mig_instance_is_a_slot_and_a_job_gets_exactly_its_instance(mig_node: MigNode) -> None:
    node, backend, client = mig_node.node, mig_node.backend, mig_node.redis
    gpus = simulated_gpus(SPEC, seed=node.node_name)
    instances = [g.uuid for g in gpus if g.parent_uuid]
    assert len(instances) == 2

    listed = json.loads(cli(node, "gpus", "--json").stdout)
    assert [(g["uuid"], g["mig_profile"], g["parent_uuid"]) for g in listed["gpus"]] == [
        (gpus[0].uuid, None, None),
        (instances[0], "3g.40gb", gpus[0].uuid),
        (instances[1], "3g.40gb", gpus[0].uuid),
    ]
    assert [s["gpus"] for s in listed["slots"]] == [[instances[0]], [instances[1]]]
    assert sorted(r.slot.gpu_uuids[0] for r in live(client, node.node_name).values()) == sorted(instances)

    jobs = [gpu_job(seconds=3) for _ in range(4)]
    for job in jobs:
        backend.send_job(job)
    results = [backend.wait_for_result(job["id"], 90) for job in jobs]

    assert [r["status"] for r in results] == ["completed"] * 4
    assert all(len(gpus_seen(r)) == 1 and gpus_seen(r)[0] in instances for r in results)
    assert {gpus_seen(r)[0] for r in results} == set(instances)
    assert_no_gpu_shared_at_once(results)
    assert max_overlap(results) == 2


def test_an_xid_on_the_gpu_stops_every_instance_carved_from_it(mig_node: MigNode) -> None:
    node, client = mig_node.node, mig_node.redis
    done = cli(node, "sim-gpu", "0", "--xid", "79")
    assert done.returncode == 0 and "and its 2 MIG instance(s)" in done.stdout, done.stderr
    try:
        wait_for(lambda: {r.state for r in live(client, node.node_name).values()} == {SlotState.UNHEALTHY}, 30)
    finally:
        assert cli(node, "sim-gpu", "0", "--healthy").returncode == 0
    wait_for(lambda: {r.state for r in live(client, node.node_name).values()} == {SlotState.SERVING}, 30)
