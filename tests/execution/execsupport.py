"""Support for the execution tests: a whole node (`hypernode-host up`) against the reference backend.

Each test module starts its own node with the settings it needs, submits real jobs through the
reference backend, and checks after each job that the host and the agent are unharmed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store, keys
from hypernode_host.state.records import Registration
from support import NodeProcess, job_containers, node_stack, wait_for


class Node:
    """A running node and the backend it serves; ``run`` submits a job and waits for its result."""

    def __init__(self, backend: BackendThread, process: NodeProcess, redis_server: RedisProcess) -> None:
        self.backend = backend
        self.process = process
        self.redis_server = redis_server
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)

    @property
    def name(self) -> str:
        return self.process.node_name

    @property
    def identity(self) -> str:
        """The node's identity on the engine: in its containers' names and labels."""
        return Store(self.redis).node.identity()

    def submit(self, **job: Any) -> str:
        job.setdefault("id", f"x-{uuid.uuid4().hex[:12]}")
        job.setdefault("memoryLimit", "256m")
        job.setdefault("cpuLimit", 1.0)
        return self.backend.send_job(job)

    def result(self, job_id: str, wait_s: float = 60) -> dict[str, Any]:
        try:
            return self.backend.wait_for_result(job_id, wait_s)
        except TimeoutError:
            raise AssertionError(f"no result for {job_id}; node output:\n{self.process.output()[-4000:]}") from None

    def run(self, wait_s: float = 60, **job: Any) -> dict[str, Any]:
        return self.result(self.submit(**job), wait_s)

    def workers(self) -> dict[int, Registration]:
        """Live worker registrations by slot."""
        return {r.slot.id: r for r in Store(self.redis).registry.all() if r.host == self.name}

    def worker_pid(self, slot: int) -> int:
        return int(wait_for(lambda: (worker := self.workers().get(slot)) and worker.pid, timeout=30))

    def slot_running(self, job_id: str) -> int:
        """The slot whose worker holds ``job_id`` (waits until one does)."""
        key = keys.JOB.format(job_id=job_id)
        return int(wait_for(lambda: self.redis.hget(key, "state") == "running" and self.redis.hget(key, "slot")))

    def record(self, job_id: str) -> dict[str, str]:
        return self.redis.hgetall(keys.JOB.format(job_id=job_id))

    def assert_unharmed(self, slots: int = 2) -> None:
        """The agent is up and connected, every slot has a live worker, and no job container is left."""
        assert self.process.proc is not None and self.process.proc.poll() is None, self.process.output()[-3000:]
        assert self.backend.nodes()[0]["connected"]
        workers = wait_for(lambda: (w := self.workers()) and len(w) == slots and w, timeout=30)
        for worker in workers.values():
            os.kill(worker.pid, 0)  # raises if the worker process is gone
        wait_for(lambda: job_containers(self.name) == [], timeout=60)

    def close(self) -> None:
        self.redis.close()


@contextmanager
def running_node(**extra_env: str) -> Iterator[Node]:
    """A private Redis, a reference backend and `hypernode-host up` with two CPU slots (plus ``extra_env``)."""
    with (
        node_stack(HN_CPU_SLOTS="2", HN_JOB_TIMEOUT="120", **extra_env) as (redis_server, backend, env),
        NodeProcess(env) as process,
    ):
        backend.wait_for_node(timeout=30)
        node = Node(backend, process, redis_server)
        try:
            node.assert_unharmed()
            yield node
        finally:
            node.close()
        assert process.stop() == 0, process.output()[-3000:]
        assert job_containers(process.node_name) == []


def proc_status(pid: int, field: str) -> int:
    """A size from /proc/PID/status (VmRSS, VmHWM) in bytes; 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's resident memory every 50 ms on a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def host_processes_with(marker: str) -> list[int]:
    """Pids of host processes whose command line contains ``marker`` (jobs' processes are visible here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def write_wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """A minimal pure-Python wheel (PEP 427) with one module, ``name``, written into ``directory``."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": module_source.encode(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hypernode-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [f"{path},sha256={_urlsafe_digest(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    path.write_bytes(buffer.getvalue())
    path.chmod(0o644)
    return path


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
