"""GPU leases against a real Redis, and real worker processes: two workers never hold the same GPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from hypernode_host.errors import GpuError
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import keys
from hypernode_host.state.holders import owner_id
from hypernode_host.state.leases import GpuLeases
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, node_env, wait_for


def test_a_second_worker_on_a_held_gpu_is_refused(redis_client: redis.Redis) -> None:
    first = GpuLeases(redis_client, ["GPU-a", "GPU-b"], "host/slot-0/pid-1/x", ttl_s=30)
    first.acquire()
    second = GpuLeases(redis_client, ["GPU-c", "GPU-b"], "other-host/slot-0/pid-2/y", ttl_s=30)

    with pytest.raises(GpuError, match="GPU GPU-b is already held by worker host/slot-0/pid-1/x"):
        second.acquire()
    assert second.holders() == {"GPU-c": None, "GPU-b": "host/slot-0/pid-1/x"}  # all or nothing


def test_release_frees_and_refresh_notices_a_lost_lease(redis_client: redis.Redis) -> None:
    lease = GpuLeases(redis_client, ["GPU-a"], "me", ttl_s=30)
    lease.acquire()
    assert lease.refresh()
    redis_client.set("hn:gpu-lease:GPU-a", "someone-else")
    assert not lease.refresh()
    lease.release()  # never deletes a lease it does not own
    assert redis_client.get("hn:gpu-lease:GPU-a") == "someone-else"


def _dead_pid() -> int:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(dead.stdout)


def test_a_dead_holder_of_our_pid_namespace_is_taken_over_at_once(redis_client: redis.Redis) -> None:
    holder = owner_id(0).replace(f"/pid-{os.getpid()}/", f"/pid-{_dead_pid()}/")
    redis_client.set("hn:gpu-lease:GPU-a", holder, ex=30)

    GpuLeases(redis_client, ["GPU-a"], "new-owner", ttl_s=30).acquire()

    assert redis_client.get("hn:gpu-lease:GPU-a") == "new-owner"


@pytest.mark.parametrize("namespace", ["/ns-0123456789abcdef", ""], ids=["another-container", "no-namespace"])
def test_a_holder_of_another_pid_namespace_keeps_its_lease_until_its_ttl(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Containers sharing the host's network share its host name, not its pids: that pid may be alive there."""
    holder = f"{socket.gethostname()}/slot-0/pid-{_dead_pid()}{namespace}/zz"
    redis_client.set("hn:gpu-lease:GPU-a", holder, ex=30)

    with pytest.raises(GpuError, match="already held by worker"):
        GpuLeases(redis_client, ["GPU-a"], "new-owner", ttl_s=30).acquire()

    assert redis_client.get("hn:gpu-lease:GPU-a") == holder


def test_a_second_worker_process_on_held_gpus_exits_with_the_reason(
    docker_runtime: DockerRuntime, redis_server: RedisProcess, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = node_env(redis_server.url, "ws://127.0.0.1:9", "unused", tmp_path, HN_SIMULATE_GPUS="2", HN_CPU_SLOTS="0")
    [first_gpu, _] = [g.uuid for g in simulated_gpus("2", seed=env["HN_NODE_NAME"])]
    with NodeProcess(env, ("worker", "--slot", "0")) as first:
        holder = wait_for(lambda: redis_client.get(keys.GPU_LEASE.format(uuid=first_gpu)), timeout=30)
        assert f"/pid-{first.proc.pid}/" in holder  # type: ignore[union-attr]

        second = subprocess.run(
            [sys.executable, "-m", "hypernode_host", "worker", "--slot", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert second.returncode == 1
        reason = f"error: GPU {first_gpu} is already held by worker {holder}; refusing to start a second worker on it"
        assert second.stderr.strip().splitlines()[-1] == reason
        assert redis_client.get(keys.GPU_LEASE.format(uuid=first_gpu)) == holder  # the first keeps its GPU
        assert first.proc.poll() is None  # type: ignore[union-attr]
        assert first.stop() == 0

    assert redis_client.get(keys.GPU_LEASE.format(uuid=first_gpu)) is None  # released on a clean stop
