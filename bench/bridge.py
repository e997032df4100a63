"""Bridge benchmark: heartbeat jitter while 8 jobs run, bridge memory, job frame to container start.

Real parts: a private Redis, the reference backend, `hypernode-host bridge` and 8 `worker` processes
(HN_CPU_SLOTS=8), jobs in real containers. Prints numbers and writes bench/results/bridge.json; it
asserts nothing (targets: heartbeat p99 jitter < 50 ms, bridge RSS < 50 MB).

    HN_TEST_IMAGE=hypernode/job-python:3.11 .venv/bin/python bench/bridge.py [--load-seconds 30]

Jitter: the backend stamps each heartbeat with its monotonic receipt time; the jitter of a beat is
how far its gap to the previous beat is from HN_HEARTBEAT_INTERVAL (1 s here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess

from stack import up_argvs

IMAGE = os.environ.get("HN_TEST_IMAGE", "hypernode/job-python:3.11")
SLOTS = 8
INTERVAL_S = 1.0
RESULTS = Path(__file__).parent / "results" / "bridge.json"

# CPU-bound and chatty: what makes a careless bridge miss its beats.
BUSY_JOB = """\
import time
end = time.monotonic() + {seconds}
n = 0
while time.monotonic() < end:
    n += sum(i * i for i in range(20000))
    print(f"progress {{n}}", flush=True)
print("done")
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark failed: {what} within {timeout} s")
        time.sleep(0.05)
    return value


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (the target's measure), its peak, and how much of it is private (anon) or shared (file);
    Pss shares each shared library page among the processes mapping it (the 8 workers map the same)."""
    fields = {}
    for source, names in (
        (f"/proc/{pid}/status", ("VmRSS", "VmHWM", "RssAnon", "RssFile")),
        (f"/proc/{pid}/smaps_rollup", ("Pss",)),
    ):
        for line in Path(source).read_text().splitlines():
            name, _, value = line.partition(":")
            if name in names:
                fields[name] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latest_stats(backend: BackendThread, node_id: str) -> dict[str, Any]:
    beats = backend.heartbeats(node_id)
    return beats[-1].stats if beats else {}


def beat_gaps_ms(backend: BackendThread, node_id: str, since: float, until: float) -> list[float]:
    """Gaps between consecutive heartbeats received in [since, until] (backend monotonic times), ms."""
    times = [b.monotonic for b in backend.heartbeats(node_id) if since <= b.monotonic <= until]
    return [(b - a) * 1000 for a, b in itertools.pairwise(times)]


def jitter_ms(backend: BackendThread, node_id: str, since: float, until: float) -> dict[str, Any]:
    """p50/p99/max of |gap - interval|, with every beat's jitter under "samples" (for the chart)."""
    gaps = beat_gaps_ms(backend, node_id, since, until)
    jitter = [abs(gap - INTERVAL_S * 1000) for gap in gaps]
    if not jitter:
        return {"beats": len(gaps) + 1 if gaps else 0, "samples": []}
    return {
        "beats": len(gaps) + 1,
        "p50": round(percentile(jitter, 0.5), 2),
        "p99": round(percentile(jitter, 0.99), 2),
        "max": round(max(jitter), 2),
        "mean_gap": round(statistics.fmean(gaps), 2),
        "samples": [round(j, 3) for j in jitter],
    }


def job(script: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"bench-{uuid.uuid4().hex[:10]}", "script": script, "memoryLimit": "128m", "cpuLimit": 1.0, **extra}


def start_latency_ms(backend: BackendThread, job_ids: list[str]) -> list[int]:
    """Per job: the container's State.StartedAt (the result's startedAt) minus the backend's dispatch time."""
    dispatched = {j["id"]: j["dispatchedAt"] for j in backend.jobs()}
    return [backend.results(i)[0]["startedAt"] - dispatched[i] for i in job_ids]


def node_env(token: str, endpoint: str, redis_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env.update(
        HN_NODE_TOKEN=token,
        HN_ENDPOINT=endpoint,
        HN_REDIS_URL=redis_url,
        HN_JOB_IMAGE=IMAGE,
        HN_KEY_FILE=str(workdir / "node.key"),
        HN_NODE_NAME=f"bench-{secrets.token_hex(3)}",
        HN_HEARTBEAT_INTERVAL=str(INTERVAL_S),
        HN_CPU_SLOTS=str(SLOTS),
        HN_SIMULATE_GPUS="0",  # no GPU slots even on a GPU machine: exactly SLOTS CPU workers
        HN_JOB_TIMEOUT="600",
        HN_LOG_LEVEL="WARNING",
    )
    return env


def workers_memory_kb(workers: list[subprocess.Popen[bytes]]) -> list[dict[str, int]]:
    return [memory_kb(worker.pid) for worker in workers]


def run(load_seconds: float, idle_seconds: float = 10.0) -> dict[str, Any]:
    """Bridge and 8 workers as separate processes (so each one's memory is its own), idle then loaded."""
    token = f"tok-{secrets.token_hex(8)}"
    report: dict[str, Any] = {"slots": SLOTS, "heartbeat_interval_s": INTERVAL_S, "image": IMAGE}
    with (
        RedisProcess() as redis_server,
        BackendThread("127.0.0.1", 0, [token]) as backend,
        tempfile.TemporaryDirectory() as workdir,
    ):
        env = node_env(token, backend.url, redis_server.url, Path(workdir))
        report["node_name"] = env["HN_NODE_NAME"]
        # Started exactly as `up` starts them (same argv), but each on its own, so each one's memory is its own.
        bridge_argv, *worker_argvs = up_argvs(env)
        if len(worker_argvs) != SLOTS:
            raise SystemExit(f"benchmark failed: the node plans {len(worker_argvs)} workers, not {SLOTS}")
        log = Path(workdir) / "node.log"
        with log.open("ab") as sink:
            bridge = subprocess.Popen(bridge_argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
            workers = [subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT) for argv in worker_argvs]
        try:
            node_id = backend.wait_for_node(timeout=60)
            wait_for(lambda: latest_stats(backend, node_id).get("free_slots") == SLOTS, 60, "all workers up")
            report |= idle_phase(backend, node_id, bridge, workers, idle_seconds)
            report |= load_phase(backend, node_id, bridge, workers, load_seconds)
        finally:
            stop_all([bridge, *workers])
    return report


def idle_phase(
    backend: BackendThread,
    node_id: str,
    bridge: subprocess.Popen[bytes],
    workers: list[subprocess.Popen[bytes]],
    idle_seconds: float,
) -> dict[str, Any]:
    """Beats and memory with nothing to do; then single jobs, one at a time."""
    report: dict[str, Any] = {}
    idle_from = time.monotonic()
    time.sleep(idle_seconds)
    report["idle_jitter_ms"] = jitter_ms(backend, node_id, idle_from, time.monotonic())
    report["bridge_memory_idle_kb"] = memory_kb(bridge.pid)
    report["workers_memory_idle_kb"] = workers_memory_kb(workers)
    singles = []
    for _ in range(5):
        one = job("print('done')")
        backend.send_job(one)
        backend.wait_for_result(one["id"], 120)
        singles.append(one["id"])
    report["frame_to_container_start_ms_idle"] = start_latency_ms(backend, singles)
    return report


def load_phase(
    backend: BackendThread,
    node_id: str,
    bridge: subprocess.Popen[bytes],
    workers: list[subprocess.Popen[bytes]],
    load_seconds: float,
) -> dict[str, Any]:
    """8 CPU-bound, chatty jobs at once on 8 slots: beats and memory while they run."""
    report: dict[str, Any] = {}
    busy = [job(BUSY_JOB.format(seconds=load_seconds)) for _ in range(SLOTS)]
    for one in busy:
        backend.send_job(one)
    wait_for(lambda: latest_stats(backend, node_id).get("active_jobs") == SLOTS, 120, "8 jobs running at once")
    load_from = time.monotonic()
    rss_samples = []
    while time.monotonic() - load_from < load_seconds - 3:
        rss_samples.append(memory_kb(bridge.pid)["VmRSS"])
        time.sleep(1)
    report["load_jitter_ms"] = jitter_ms(backend, node_id, load_from, time.monotonic())
    report["bridge_memory_load_kb"] = {**memory_kb(bridge.pid), "VmRSS_max_sampled": max(rss_samples)}
    for one in busy:
        backend.wait_for_result(one["id"], load_seconds + 120)
    # VmHWM after the jobs ended: the peak over the whole load, result handling included.
    report["workers_memory_load_kb"] = workers_memory_kb(workers)
    report["frame_to_container_start_ms_8_at_once"] = start_latency_ms(backend, [o["id"] for o in busy])
    report["results"] = {o["id"]: backend.results(o["id"])[0]["status"] for o in busy}
    return report


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def max_hwm_mb(memories: list[dict[str, int]]) -> float:
    return max(m["VmHWM"] for m in memories) / 1024


def summary(report: dict[str, Any]) -> str:
    idle, load = report["idle_jitter_ms"], report["load_jitter_ms"]
    mem_idle, mem_load = report["bridge_memory_idle_kb"], report["bridge_memory_load_kb"]
    lines = [
        f"heartbeat jitter idle  : p50 {idle.get('p50')} ms, p99 {idle.get('p99')} ms ({idle['beats']} beats)",
        f"heartbeat jitter 8 jobs: p50 {load.get('p50')} ms, p99 {load.get('p99')} ms, max {load.get('max')} ms "
        f"({load['beats']} beats)   target p99 < 50 ms",
        f"bridge RSS idle        : {mem_idle['VmRSS'] / 1024:.1f} MB (anon {mem_idle['RssAnon'] / 1024:.1f} MB, "
        f"file {mem_idle['RssFile'] / 1024:.1f} MB, PSS {mem_idle['Pss'] / 1024:.1f} MB)",
        f"bridge RSS under load  : {mem_load['VmRSS'] / 1024:.1f} MB, peak (VmHWM) {mem_load['VmHWM'] / 1024:.1f} MB"
        "   target < 50 MB",
        f"worker peak RSS (VmHWM, max of {len(report['workers_memory_idle_kb'])}): idle "
        f"{max_hwm_mb(report['workers_memory_idle_kb']):.1f} MB, after load "
        f"{max_hwm_mb(report['workers_memory_load_kb']):.1f} MB   target < 60 MB",
        f"job frame -> container start, one at a time: {report['frame_to_container_start_ms_idle']} ms",
        f"job frame -> container start, 8 at once    : {sorted(report['frame_to_container_start_ms_8_at_once'])} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--load-seconds", type=float, default=30.0, help="how long the 8 jobs run")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long the idle beats are measured")
    args = parser.parse_args()
    report = run(args.load_seconds, args.idle_seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"(full figures in {RESULTS})")


if __name__ == "__main__":
    main()
