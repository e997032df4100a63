"""Helpers for the GPU integration tests: GPU-reporting jobs, worker registrations, a password Redis."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from hypernode_host.core.admission import admit
from hypernode_host.core.jobs import JobSpec
from hypernode_host.core.slots import Slot
from hypernode_host.node.redis_server import free_port
from hypernode_host.settings import Settings
from hypernode_host.state import Store, redis_url
from hypernode_host.state.records import Registration
from hypernode_host.tasks.broker import build_broker, enqueue_job
from support import wait_for

SEEN = re.compile(r"^gpus=(\S*)$", re.MULTILINE)


def gpu_job(seconds: float = 0, **fields: Any) -> dict[str, Any]:
    """A job that prints the GPUs it was given (NVIDIA_VISIBLE_DEVICES), then holds them ``seconds``."""
    return {
        "id": f"g-{uuid.uuid4().hex[:12]}",
        "command": f'echo "gpus=$NVIDIA_VISIBLE_DEVICES"; sleep {seconds}; echo done',
        "gpuRequired": True,
        "memoryLimit": "64m",
        "cpuLimit": 0.25,
        "estimatedTime": 60,
        **fields,
    }


def gpus_seen(result: Mapping[str, Any]) -> tuple[str, ...]:
    """The UUIDs a job printed (one line ``gpus=...``)."""
    [line] = SEEN.findall(result["logs"])
    return tuple(line.split(",")) if line else ()


def max_overlap(results: Sequence[Mapping[str, Any]]) -> int:
    """The most jobs that ran at the same moment, from their startedAt/completedAt."""
    edges = sorted([(r["startedAt"], 1) for r in results] + [(r["completedAt"], -1) for r in results])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def assert_no_gpu_shared_at_once(results: Sequence[Mapping[str, Any]]) -> None:
    """No two jobs whose runs overlap were given a common GPU."""
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            overlap = a["startedAt"] < b["completedAt"] and b["startedAt"] < a["completedAt"]
            shared = set(gpus_seen(a)) & set(gpus_seen(b))
            assert not (overlap and shared), f"{a['id']} and {b['id']} ran at once on {shared}"


def live(client: redis.Redis, host: str) -> dict[int, Registration]:
    """The live registrations of ``host``'s workers, by slot id."""
    return {r.slot.id: r for r in Store(client).registry.all() if r.host == host}


def wait_for_slots(client: redis.Redis, host: str, count: int, timeout: float = 60) -> dict[int, Registration]:
    return wait_for(lambda: (slots := live(client, host)) and len(slots) == count and slots, timeout=timeout)


class DirectQueue:
    """Records and enqueues jobs exactly as the bridge does, for tests that run workers without a bridge."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings)
        self.broker = build_broker(redis_url(settings))

    def submit(self, job: dict[str, Any], slots: Sequence[Slot]) -> str:
        queue = admit(JobSpec.parse(job), self.settings, slots).queue
        assert self.store.jobs.record(job["id"], job, queue)
        enqueue_job(self.broker, queue, job["id"])
        self.store.jobs.mark_enqueued(job["id"])
        return queue

    def result(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        record = wait_for(lambda: (r := self.store.jobs.get(job_id)) and r.done and r, timeout=timeout)
        return record.result()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.broker.client.close()
        self.store.close()


@contextmanager
def password_redis() -> Iterator[str]:
    """A private redis-server that requires a password; yields its URL (password included)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: run `make services`"
    port, password = free_port(), uuid.uuid4().hex
    directory = Path(tempfile.mkdtemp(prefix="hn-redis-auth-"))
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password, "--dir", str(directory)]
    proc = subprocess.Popen([*args, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_for(lambda: _answers(client), timeout=10)
        assert not _answers(redis.Redis(port=port), close=True), "the password must be required"
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _answers(client: redis.Redis, close: bool = False) -> bool:
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    except redis.ConnectionError:
        return False
    finally:
        if close:
            client.close()
