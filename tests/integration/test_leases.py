"""GPU leases against a real Redis: two workers never hold the same GPU."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import redis

from hypernode_host.errors import GpuError
from hypernode_host.gpu.leases import GpuLeases


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


def test_a_dead_local_holder_is_taken_over_at_once(redis_client: redis.Redis) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    holder = f"{socket.gethostname()}/slot-0/pid-{dead.stdout.strip()}/zz"
    redis_client.set("hn:gpu-lease:GPU-a", holder, ex=30)

    GpuLeases(redis_client, ["GPU-a"], "new-owner", ttl_s=30).acquire()

    assert redis_client.get("hn:gpu-lease:GPU-a") == "new-owner"
