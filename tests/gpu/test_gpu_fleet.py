"""A node whose workers span two hosts on a real network: network namespaces with their own addresses.

Host A runs Redis (password and TLS only, no plaintext port) and `hypernode-host up` with an RTX 4090;
host B, another namespace, runs only a worker with an A100, reaching A's Redis over TLS across the
bridge. Jobs too big for A go to B; when B dies (SIGKILL, then its link cut) `workers` and `top`
show it lost, jobs only it could run are refused, and once B is back its worker finishes the job it
held: one result, no second run (the failure model's "the next worker of that slot"). Both hosts share
this machine's Docker engine, as their containers are found by name.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fleet_support import HostProcess, Network, network, tls_redis
from gpu_support import gpu_job, gpus_seen

from hypernode_host.backend.harness import BackendThread
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.state import Store
from hypernode_host.tasks.containers import DockerRuntime
from support import job_containers, node_env, wait_for

pytestmark = pytest.mark.timeout(600)


@dataclass
class Fleet:
    net: Network
    backend: BackendThread
    url: str
    env_a: dict[str, str]
    env_b: dict[str, str]
    a: HostProcess
    b: HostProcess

    @property
    def host_a(self) -> str:
        return self.env_a["HN_NODE_NAME"]

    @property
    def host_b(self) -> str:
        return self.env_b["HN_NODE_NAME"]

    def json(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "hypernode_host", *args, "--json"], capture_output=True,
                              text=True, env=self.env_a, timeout=60, check=False)  # fmt: skip
        assert done.stdout, done.stderr
        return json.loads(done.stdout)

    def hosts(self, command: str = "workers") -> dict[str, dict[str, Any]]:
        return {h["host"]: h for h in self.json(command)["hosts"]}

    def result(self, job: dict[str, Any], wait_s: float = 90) -> dict[str, Any]:
        try:
            return self.backend.wait_for_result(job["id"], wait_s)
        except TimeoutError:
            logs = f"A:\n{self.a.output()[-3000:]}\nB:\n{self.b.output()[-3000:]}"
            raise AssertionError(f"no result for {job['id']}\n{logs}") from None


@pytest.fixture
def fleet(docker_runtime: DockerRuntime) -> Iterator[Fleet]:
    token = f"tok-{secrets.token_hex(8)}"
    with (
        network(["a", "b"]) as net,
        tls_redis(net, "a") as url,
        BackendThread(net.gateway, 0, [token]) as backend,
        tempfile.TemporaryDirectory() as workdir,
    ):
        name_a = f"host-a-{secrets.token_hex(3)}"
        env_a = node_env(url, backend.url, token, Path(workdir), HN_SIMULATE_GPUS="1xRTX4090:24576",
                         HN_CPU_SLOTS="0", HN_JOB_TIMEOUT="120", HN_NODE_NAME=name_a)  # fmt: skip
        # Host B: its own name and GPUs, A's Redis and A's node key (copied on a real fleet).
        env_b = {**env_a, "HN_NODE_NAME": f"host-b-{secrets.token_hex(3)}", "HN_SIMULATE_GPUS": "1xA100:81920"}
        a = HostProcess(net, "a", env_a, ("up",))
        backend.wait_for_node(timeout=60)
        b = HostProcess(net, "b", env_b, ("worker", "--slot", "0"))
        built = Fleet(net, backend, url, env_a, env_b, a, b)
        with Store.from_url(url) as store:
            wait_for(lambda: {r.host for r in store.registry.all()} == {built.host_a, built.host_b}, timeout=60)
        yield built
        built.b.stop()
        assert built.a.stop() == 0, built.a.output()[-3000:]
        assert job_containers(built.host_a) == [] and job_containers(built.host_b) == []


def test_jobs_go_to_the_other_host_over_tls_and_its_loss_is_recovered(fleet: Fleet) -> None:
    big = gpu_job(seconds=1, gpuMemoryMb=40000)  # only B's A100 holds it
    small = gpu_job(seconds=1, gpuMemoryMb=20000)
    fleet.backend.send_job(big)
    fleet.backend.send_job(small)
    [b_gpu] = [g.uuid for g in simulated_gpus("1xA100:81920", seed=fleet.host_b)]

    done = fleet.result(big)
    assert done["status"] == "completed" and gpus_seen(done) == (b_gpu,)
    assert fleet.result(small)["status"] == "completed"
    hosts = fleet.hosts()
    assert hosts[fleet.host_a]["serving"] == 1 and hosts[fleet.host_b]["serving"] == 1
    assert [w["host"] for w in fleet.json("workers")["workers"]] == sorted([fleet.host_a, fleet.host_b])

    # B dies while it runs a job only it can run, then falls off the network.
    held = gpu_job(seconds=20, gpuMemoryMb=40000)
    fleet.backend.send_job(held)
    client = redis.Redis.from_url(fleet.url, decode_responses=True)
    try:
        wait_for(lambda: client.hget(f"hn:job:{held['id']}", "host") == fleet.host_b, timeout=60)
        wait_for(lambda: client.hget(f"hn:job:{held['id']}", "state") == "running", timeout=60)
    finally:
        client.close()
    fleet.b.kill()
    fleet.net.cut("b")

    lost = wait_for(lambda: (h := fleet.hosts("top")[fleet.host_b]) and h["down"] == 1 and h, timeout=60)
    assert (lost["workers"], lost["serving"]) == (1, 0)
    assert fleet.hosts()[fleet.host_a]["serving"] == 1  # A is unharmed
    too_big = gpu_job(gpuMemoryMb=40000)
    fleet.backend.send_job(too_big)
    refused = fleet.result(too_big)
    assert (refused["status"], refused["reason"]) == ("error", "no_capacity")  # only B could run it

    # B comes back: its worker finds the job it held and finishes it, once.
    fleet.net.restore("b")
    fleet.b = HostProcess(fleet.net, "b", fleet.env_b, ("worker", "--slot", "0"))
    finished = fleet.result(held, wait_s=120)
    assert finished["status"] == "completed" and gpus_seen(finished) == (b_gpu,)
    assert len(fleet.backend.results(held["id"])) == 1
    wait_for(lambda: fleet.hosts()[fleet.host_b]["serving"] == 1, timeout=60)
