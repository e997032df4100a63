"""End-to-end benchmarks on a whole node (`hypernode-host up`), each beside raw docker-py in the same run.

- latency: one trivial job at a time, backend `job` → backend `job_result`, timed by a submitter
  (`submit_job(wait=True)` over the backend's WebSocket), against raw docker-py create / put_archive /
  start / wait / logs / remove of the same hardened container, alternating ours and raw job by job;
- throughput: blocks of 24 trivial jobs submitted at once to N one-GPU slots, against N threads
  running raw docker-py (ours, raw, raw, ours);
- recovery: SIGKILL the worker 1 s into a ~3 s job; seconds until the backend has the result.

Used by run_all.py; nothing here asserts a target.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from hypernode_host.backend.submit import submit_job
from hypernode_host.tasks.containers import LABEL_JOB

import exec as exec_bench
from stack import Stack, percentile

TRIVIAL = "print('done')\n"
# Prints, sleeps ~3 s, prints done: long enough to kill its worker 1 s in and see the job finish.
RECOVERY_JOB_S = 3.0
RECOVERY_SCRIPT = (
    f"import time\nprint('started', flush=True)\ntime.sleep({RECOVERY_JOB_S})\nprint('done', flush=True)\n"
)
KILL_AFTER_S = 1.0
WAIT_TIMEOUT_S = 120.0
SIMULATED_UUID = "GPU-bench-raw"  # the raw baseline's env names one GPU, as a (simulated) GPU job's does


def gpu_job(script: str = TRIVIAL, **extra: Any) -> dict[str, Any]:
    """A job for a one-GPU slot (simulated GPUs: HN_CPU_SLOTS=0 leaves only GPU slots)."""
    fields = {"script": script, "memoryLimit": "256m", "cpuLimit": 1.0, "gpuRequired": True}
    return {"id": f"bench-{uuid.uuid4().hex[:12]}", **fields, **extra}


async def _submit(url: str, job: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(seconds from submit to result, the result) for one job, checked to have completed."""
    started = time.perf_counter()
    reply = await submit_job(url, job, wait=True, wait_timeout=WAIT_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    result = reply["result"] or {}
    if result.get("status") != "completed":
        raise RuntimeError(f"benchmark job {job['id']} did not complete: {str(result)[:500]}")
    return elapsed, result


async def _submit_all(url: str, jobs: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    return list(await asyncio.gather(*(_submit(url, job) for job in jobs)))


class RawDocker:
    """Raw docker-py runs of the hardened container: one client per thread, as our workers have."""

    def __init__(self, image_id: str, node_name: str) -> None:
        self.config, self.archive = exec_bench.raw_job_container(image_id, node_name, gpu_uuids=(SIMULATED_UUID,))
        self._local = threading.local()
        self._clients: list[docker.DockerClient] = []
        self._lock = threading.Lock()

    def client(self) -> docker.DockerClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = docker.from_env()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def run(self, _index: int = 0) -> float:
        return exec_bench.raw_run(self.client(), self.config, self.archive)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _summary_ms(samples_s: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
        "samples_ms": [round(v, 1) for v in ms],
    }


def latency(stack: Stack, raw: RawDocker, runs: int, warmup: int = 2) -> dict[str, Any]:
    """p50/p99 of ours and raw, one job at a time, alternating which goes first in each pair."""
    ours: list[float] = []
    baseline: list[float] = []
    dispatch_to_start: list[int] = []
    with asyncio.Runner() as loop:
        for index in range(warmup + runs):
            job = gpu_job()
            if index % 2 == 0:  # alternate who goes first, so neither always follows the other's cleanup
                ours_s, raw_s = loop.run(_submit(stack.backend.url, job))[0], raw.run()
            else:
                raw_s = raw.run()
                ours_s = loop.run(_submit(stack.backend.url, job))[0]
            if index >= warmup:  # the first jobs pay for lazy imports and cold connections
                ours.append(ours_s)
                baseline.append(raw_s)
                dispatch_to_start.append(_dispatch_to_start_ms(stack, job["id"]))
    ratio_p50 = percentile(ours, 50) / percentile(baseline, 50)
    return {
        "ours": _summary_ms(ours),
        "raw": _summary_ms(baseline),
        "ratio_p50": round(ratio_p50, 3),
        "ratio_p99": round(percentile(ours, 99) / percentile(baseline, 99), 3),
        "dispatch_to_container_start_ms": _int_summary(dispatch_to_start),
    }


def _dispatch_to_start_ms(stack: Stack, job_id: str) -> int:
    """The backend's dispatch time to the container's StartedAt (the result's startedAt), ms."""
    dispatched = next(j["dispatchedAt"] for j in stack.backend.jobs() if j["id"] == job_id)
    return int(stack.backend.results(job_id)[0]["startedAt"]) - int(dispatched)


def _int_summary(values: list[int]) -> dict[str, Any]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "samples": values}


def throughput(stack: Stack, raw: RawDocker, slots: int, jobs: int) -> dict[str, Any]:
    """Jobs/s of blocks of ``jobs`` trivial jobs submitted at once to ``slots`` slots, and of ``slots`` raw threads.

    Blocks in the order ours, raw, raw, ours: a machine that slows down or speeds up during the
    measurement weighs on both sides alike.
    """
    seconds: dict[str, list[float]] = {"ours": [], "raw": []}
    with asyncio.Runner() as loop, ThreadPoolExecutor(slots) as pool:
        loop.run(_submit_all(stack.backend.url, [gpu_job() for _ in range(slots)]))  # every worker warm
        list(pool.map(raw.run, range(slots)))  # one warm client per thread
        for side in ("ours", "raw", "raw", "ours"):
            started = time.perf_counter()
            if side == "ours":
                loop.run(_submit_all(stack.backend.url, [gpu_job() for _ in range(jobs)]))
            else:
                list(pool.map(raw.run, range(jobs)))
            seconds[side].append(round(time.perf_counter() - started, 3))
    ours_rate, raw_rate = 2 * jobs / sum(seconds["ours"]), 2 * jobs / sum(seconds["raw"])
    return {
        "slots": slots,
        "jobs_per_block": jobs,
        "ours_block_s": seconds["ours"],
        "raw_block_s": seconds["raw"],
        "ours_jobs_per_s": round(ours_rate, 3),
        "raw_jobs_per_s": round(raw_rate, 3),
        "ratio": round(ours_rate / raw_rate, 3),
    }


def recovery(stack: Stack) -> dict[str, Any]:
    """SIGKILL the worker 1 s after the job's container started; when the backend has the result, and why."""
    (slot, worker_pid), *_ = stack.worker_pids().items()
    if worker_pid not in _descendants(stack.node.pid):
        raise RuntimeError(f"worker pid {worker_pid} is not a child of the node")
    job = gpu_job(RECOVERY_SCRIPT, timeout=60)
    stack.backend.send_job(job)
    started = _wait_running(job["id"])
    time.sleep(max(started + KILL_AFTER_S - time.monotonic(), 0))
    os.kill(worker_pid, signal.SIGKILL)
    killed, killed_wall_ms = time.monotonic(), time.time_ns() // 1_000_000
    restarted_s = None
    while not stack.backend.results(job["id"]):
        if restarted_s is None and stack.worker_pids().get(slot, worker_pid) != worker_pid:
            restarted_s = time.monotonic() - killed  # the next worker of the slot has registered
        if time.monotonic() - killed > WAIT_TIMEOUT_S:
            raise RuntimeError(f"no result for {job['id']} {WAIT_TIMEOUT_S:.0f} s after the kill")
        time.sleep(0.02)
    result_s = time.monotonic() - killed
    result = stack.backend.results(job["id"])[0]
    remaining_s = (int(result["completedAt"]) - killed_wall_ms) / 1000  # the job's own time left at the kill
    return {
        "status": result["status"],
        "kill_after_container_start_s": round(killed_wall_ms / 1000 - int(result["startedAt"]) / 1000, 3),
        "kill_to_result_s": round(result_s, 3),
        "job_remaining_s": round(remaining_s, 3),
        "recovery_cost_s": round(result_s - remaining_s, 3),
        "kill_to_new_worker_registered_s": None if restarted_s is None else round(restarted_s, 3),
        "job_duration_ms": result["durationMs"],
    }


def _wait_running(job_id: str, timeout: float = 60) -> float:
    """Monotonic time at which the job's container was first seen running (polled every 50 ms)."""
    client = docker.from_env()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = client.api.containers(filters={"label": f"{LABEL_JOB}={job_id}", "status": "running"})
            if found:
                return time.monotonic()
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"job {job_id}'s container never ran")


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in os.scandir(f"/proc/{current}/task"):
            with open(f"{task.path}/children") as children:
                kids = [int(p) for p in children.read().split()]
            found.update(kids)
            pending.extend(kids)
    return found


def node_name() -> str:
    return f"bench-raw-{secrets.token_hex(3)}"
