"""Job execution benchmark (`make bench-exec`): prints numbers, asserts nothing.

1. Overhead: the runner (claim, admission, image check, create + script, attach, start, wait,
   state, logs, proofs, result stored, remove) against raw docker-py create / put_archive /
   start / wait / logs / remove of the same hardened container, interleaved, 20 runs each;
   the median ratio. Target: <= 1.10.
2. Log flood: a job writing 1 GiB to stdout through a real worker process (`hypernode-host
   worker`): the worker's peak RSS (sampled from /proc, and the kernel's VmHWM) and MB/s
   from the container's start to its exit. Target: peak RSS < 100 MB. Raw docker-py attach
   throughput of the same flood is printed beside it for reference.

Writes bench/results/exec.json as well.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.broker import build_broker, enqueue_job
from hypernode_host.tasks.containers import (
    LABEL_ATTEMPT,
    LABEL_GPUS,
    LABEL_JOB,
    LABEL_NODE,
    LABEL_WORKER,
    SCRIPT_DIR,
    SCRIPT_PATH,
    ContainerSpec,
    DockerRuntime,
    container_config,
)
from hypernode_host.tasks.runner import JobRunner

from stack import up_argvs

IMAGE = os.environ.get("HN_TEST_IMAGE", "hypernode/job-python:3.11")
RUNS = 20
WARMUP = 2
SCRIPT = "print('done')\n"
FLOOD_SCRIPT = (
    "import sys\nblock = (b'y' * 1023 + b'\\n') * 1024\nwrite = sys.stdout.buffer.write\n"
    "for _ in range(1024):\n    write(block)\nwrite(b'done\\n')\n"
)
RESULTS = Path(__file__).resolve().parent / "results" / "exec.json"


def job(job_id: str, script: str, timeout: int = 120) -> dict[str, Any]:
    return {"id": job_id, "script": script, "memoryLimit": "256m", "cpuLimit": 1.0, "timeout": timeout}


def script_tar(script: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("script.py")
        info.size, info.mode = len(script.encode()), 0o444
        archive.addfile(info, io.BytesIO(script.encode()))
    return buffer.getvalue()


def raw_job_container(
    image_id: str, node_name: str, script: str = SCRIPT, gpu_uuids: tuple[str, ...] = ()
) -> tuple[dict[str, Any], bytes]:
    """The hardened container the runner would create for a trivial job (256 MiB, 1 CPU), and its script tar.

    Built by the same ``container_config``, so the raw baseline pays for exactly the same container;
    ``raw_run`` gives each run its own name.
    """
    labels = {LABEL_JOB: "bench", LABEL_NODE: node_name, LABEL_WORKER: "0", LABEL_ATTEMPT: "1"}
    spec = ContainerSpec(
        name="unused",
        image=image_id,
        command=["python", SCRIPT_PATH],
        env={"JOB_ID": "bench"},
        labels={**labels, LABEL_GPUS: ",".join(gpu_uuids)},
        memory_bytes=256 << 20,
        nano_cpus=1_000_000_000,
        gpu_uuids=gpu_uuids,
    )
    return container_config(spec), script_tar(script)


def raw_run(client: docker.DockerClient, config: dict[str, Any], archive: bytes) -> float:
    """One job the plain docker-py way, same container; seconds."""
    started = time.perf_counter()
    container = client.containers.create(**{**config, "name": f"hn-bench-raw-{secrets.token_hex(4)}"})
    container.put_archive(SCRIPT_DIR, archive)
    container.start()
    container.wait()
    container.logs()
    container.remove(force=True, v=True)
    return time.perf_counter() - started


def our_run(runner: JobRunner, store: Store) -> float:
    job_id = f"bench-{secrets.token_hex(6)}"
    store.jobs.record(job_id, job(job_id, SCRIPT), CPU_QUEUE)
    started = time.perf_counter()
    runner.run(job_id)
    elapsed = time.perf_counter() - started
    record = store.jobs.get(job_id)
    if record is None or record.result().get("status") != "completed":
        raise SystemExit(f"benchmark job failed: {record.result_json if record else None}")
    return elapsed


def overhead(redis_url: str) -> dict[str, float]:
    settings = Settings.from_env({"HN_JOB_IMAGE": IMAGE, "HN_NODE_NAME": f"bench-{secrets.token_hex(4)}"})
    store = Store.from_url(redis_url)
    runtime = DockerRuntime()
    slots = plan_slots([], 1)
    runner = JobRunner(settings, store, runtime, NodeKey.generate(), slots[0], slots)
    config, archive = raw_job_container(runtime.image_id(IMAGE) or IMAGE, settings.node_name)
    client = docker.from_env()
    raw: list[float] = []
    ours: list[float] = []
    try:
        for index in range(WARMUP + RUNS):
            raw_s, our_s = raw_run(client, config, archive), our_run(runner, store)
            if index >= WARMUP:
                raw.append(raw_s)
                ours.append(our_s)
    finally:
        client.close()
        store.close()
    raw_median, our_median = statistics.median(raw), statistics.median(ours)
    return {
        "raw_median_ms": raw_median * 1000,
        "runner_median_ms": our_median * 1000,
        "ratio": our_median / raw_median,
        "pairwise_ratio_median": statistics.median(o / r for o, r in zip(ours, raw, strict=True)),
        "raw_p90_ms": statistics.quantiles(raw, n=10)[-1] * 1000,
        "runner_p90_ms": statistics.quantiles(ours, n=10)[-1] * 1000,
    }


def rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def flood(redis_url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
        env.update(
            HN_REDIS_URL=redis_url,
            HN_JOB_IMAGE=IMAGE,
            HN_CPU_SLOTS="1",
            HN_SIMULATE_GPUS="0",  # one CPU slot and no GPU slot, even on a GPU machine
            HN_NODE_NAME=f"bench-{secrets.token_hex(4)}",
            HN_KEY_FILE=str(Path(state) / "node.key"),
            HN_LOG_LEVEL="WARNING",
        )
        log_path = Path(state) / "worker.log"
        with log_path.open("wb") as log:
            # The worker of slot 0, started exactly as `up` starts it.
            worker = subprocess.Popen(up_argvs(env)[1], env=env, stdout=log, stderr=log)
        store = Store.from_url(redis_url)
        try:
            return _flood_through(worker.pid, store, redis_url)
        finally:
            store.close()
            worker.terminate()
            worker.wait(60)


def _flood_through(pid: int, store: Store, redis_url: str) -> dict[str, float]:
    deadline = time.monotonic() + 60
    while not store.registry.all() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # past start-up recovery, consuming
    idle = rss(pid)
    job_id = f"flood-{secrets.token_hex(6)}"
    store.jobs.record(job_id, job(job_id, FLOOD_SCRIPT, timeout=300), CPU_QUEUE)
    broker = build_broker(redis_url)
    enqueue_job(broker, CPU_QUEUE, job_id)
    peak = idle
    while not ((record := store.jobs.get(job_id)) and record.done):
        peak = max(peak, rss(pid))
        time.sleep(0.02)
    broker.close()
    broker.client.close()
    result = record.result()
    seconds = result["durationMs"] / 1000
    return {
        "log_bytes": result["logBytes"],
        "seconds": seconds,
        "mb_per_s": result["logBytes"] / seconds / 1e6,
        "worker_idle_rss_mb": idle / 1e6,
        "worker_peak_rss_mb": peak / 1e6,
        "worker_vmhwm_mb": rss(pid, "VmHWM") / 1e6,
    }


def raw_flood() -> float:
    """MB/s of the same flood read through docker-py's attach and thrown away, timed the same way."""
    client = docker.from_env()
    runtime = DockerRuntime(client)
    spec = ContainerSpec(
        name=f"hn-bench-flood-{secrets.token_hex(4)}",
        image=IMAGE,
        command=["python", "-c", FLOOD_SCRIPT],
        env={},
        labels={},
        memory_bytes=256 << 20,
        nano_cpus=1_000_000_000,
    )
    container = client.containers.create(**container_config(spec))
    try:
        stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True)
        container.start()
        total = sum(len(chunk) for chunk in stream)
        stream.close()
        container.wait()
        state = runtime.state(container.id)  # from Docker's StartedAt to FinishedAt, like the result's durationMs
        return total / ((state.finished_at_ms - state.started_at_ms) / 1000) / 1e6
    finally:
        container.remove(force=True)
        client.close()


def main() -> None:
    print(f"job image {IMAGE}, {os.cpu_count()} CPUs, {RUNS} runs each (after {WARMUP} warm-up)", flush=True)
    with RedisProcess() as redis_server:
        cost = overhead(redis_server.url)
        print(f"overhead done: ratio {cost['ratio']:.3f}", flush=True)
        flow = flood(redis_server.url)
    reference = raw_flood()
    rss_ok = flow["worker_peak_rss_mb"] < 100
    rows = [
        ("raw docker-py run, median", f"{cost['raw_median_ms']:.0f} ms", ""),
        ("runner run, median", f"{cost['runner_median_ms']:.0f} ms", ""),
        ("overhead ratio (runner / raw)", f"{cost['ratio']:.3f}", _verdict(cost["ratio"] <= 1.10, "<= 1.10")),
        ("median of the 20 paired ratios", f"{cost['pairwise_ratio_median']:.3f}", ""),
        ("1 GiB flood: bytes received", f"{flow['log_bytes']:.0f}", ""),
        ("1 GiB flood: throughput", f"{flow['mb_per_s']:.0f} MB/s", ""),
        ("1 GiB flood: raw attach throughput", f"{reference:.0f} MB/s", ""),
        ("worker RSS idle", f"{flow['worker_idle_rss_mb']:.1f} MB", ""),
        ("worker RSS peak (sampled)", f"{flow['worker_peak_rss_mb']:.1f} MB", _verdict(rss_ok, "< 100 MB")),
        ("worker VmHWM", f"{flow['worker_vmhwm_mb']:.1f} MB", ""),
    ]  # fmt: skip
    width = max(len(name) for name, _, _ in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:>14}  {verdict}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**cost, **flow, "raw_flood_mb_per_s": reference}, indent=2) + "\n")
    print(f"written to {RESULTS}")


def _verdict(met: bool, target: str) -> str:
    return f"target {target}: {'met' if met else 'MISSED'}"


if __name__ == "__main__":
    main()
