"""Inspection benchmark: how long `queue`, `jobs`, `workers`, `dead` and `top` take with 100,000 jobs queued.

Real parts: a private Redis filled with the layout the bridge and Dramatiq write (job records,
the job index, the queued set, Dramatiq's ready list and message hash), plus finished jobs
with results, a running one and dead letters; then each inspection function is timed, and
each CLI command is timed end to end (process start included). Prints numbers and writes
bench/results/inspection.json; it asserts nothing (target: every view well under a second).

    .venv/bin/python bench/inspection.py [--jobs 100000]

(Not bench/queue.py: a script there would shadow the standard library's queue module.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from hypernode_host.core.jobs import JobState, Status
from hypernode_host.core.slots import CPU_QUEUE, Slot
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops import deadletters
from hypernode_host.ops import inspect as inspection
from hypernode_host.state import Store, keys
from hypernode_host.tasks.broker import ACTOR_NAME
from hypernode_host.tasks.dramatiq_redis import Queues, queue_key

RESULTS = Path(__file__).parent / "results" / "inspection.json"
FINISHED = 1_000
DEAD = 50
BATCH = 5_000
SCRIPT = "import time\nfor i in range(10):\n    print('step', i)\n    time.sleep(1)\nprint('done')\n"


def fill(client: redis.Redis, queued: int) -> None:
    """Finished jobs first (older), then ``queued`` jobs waiting on hn-cpu, as bridge and broker write them."""
    client.config_set("appendonly", "no")
    store = Store(client)
    for i in range(FINISHED):
        job_id = f"done-{i:06d}"
        store.jobs.record(job_id, {"id": job_id, "script": SCRIPT}, CPU_QUEUE)
        result = {"id": job_id, "status": "completed", "exitCode": 0, "durationMs": 10_000 + i, "logs": "done\n" * 50}
        store.jobs.finish(job_id, result)
    now = int(time.time() * 1000)
    for start in range(0, queued, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + BATCH, queued)):
            job_id, message_id = f"q-{i:07d}", str(uuid.uuid4())
            job = json.dumps({"id": job_id, "script": SCRIPT})
            pipe.hset(
                keys.JOB.format(job_id=job_id),
                mapping={"id": job_id, "job": job, "state": "queued", "queue": CPU_QUEUE, "received_at": now + i},
            )
            pipe.zadd(keys.JOB_INDEX, {job_id: now + i})
            pipe.sadd(keys.QUEUED, job_id)
            message: dict[str, Any] = {"queue_name": CPU_QUEUE, "actor_name": ACTOR_NAME, "args": [job_id]}
            message |= {"kwargs": {}, "options": {"redis_message_id": message_id}, "message_id": message_id}
            message["message_timestamp"] = now + i  # what Dramatiq's Message carries
            pipe.hset(queue_key(CPU_QUEUE, ".msgs"), message_id, json.dumps(message))
            pipe.rpush(queue_key(CPU_QUEUE), message_id)
        pipe.execute()
    for i in range(DEAD):
        body = json.dumps({"args": [f"done-{i:06d}"], "message_timestamp": now})
        client.hset(queue_key(CPU_QUEUE, ".XQ.msgs"), f"dead-{i}", body)
        client.zadd(queue_key(CPU_QUEUE, ".XQ"), {f"dead-{i}": now})


def timed(call: Callable[[], Any], repeat: int = 5) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}


def cli(url: str, *args: str) -> str:
    """Run ``hypernode-host ARGS`` against ``url`` as a process of its own; its standard output."""
    env = {**os.environ, "HN_REDIS_URL": url, "HN_CPU_SLOTS": "1", "COLUMNS": "200"}
    argv = [sys.executable, "-m", "hypernode_host", *args]
    return subprocess.run(argv, env=env, capture_output=True, check=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs waiting in the queue")
    args = parser.parse_args()
    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = Store(client)
        started = time.perf_counter()
        fill(client, args.jobs)
        print(f"filled {args.jobs} queued + {FINISHED} finished jobs in {time.perf_counter() - started:.1f} s")
        slots = [Slot(id=0)]
        queues = Queues(client)
        names = inspection.known_queues(store, slots)
        library = {
            "queue_stats": timed(lambda: queues.stats(names)),
            "recent_jobs(20)": timed(lambda: inspection.recent_jobs(store, slots, limit=20)),
            "recent_jobs(20, queued)": timed(lambda: inspection.recent_jobs(store, slots, 20, JobState.QUEUED)),
            "recent_jobs(20, completed)": timed(
                lambda: inspection.recent_jobs(store, slots, 20, status=Status.COMPLETED)
            ),
            "workers_view": timed(lambda: inspection.workers_view(store, slots, "bench")),
            "dead_letters": timed(lambda: deadletters.dead_letters(store, queues, names)),
            "node_summary": timed(lambda: inspection.node_summary(store)),
        }
        commands = {
            " ".join(argv): timed(lambda argv=argv: cli(server.url, *argv), repeat=3)  # type: ignore[misc]
            for argv in (["queue"], ["jobs"], ["jobs", "--state", "queued"], ["workers"], ["dead"], ["top", "--once"])
        }
        client.close()
    print(f"{'library call':32} {'median ms':>10} {'max ms':>8}")
    for name, numbers in library.items():
        print(f"{name:32} {numbers['median_ms']:>10} {numbers['max_ms']:>8}")
    print(f"{'hypernode-host command':32} {'median ms':>10} {'max ms':>8}   (process start included)")
    for name, numbers in commands.items():
        print(f"{name:32} {numbers['median_ms']:>10} {numbers['max_ms']:>8}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"jobs": args.jobs, "library": library, "commands": commands}, indent=2) + "\n")


if __name__ == "__main__":
    main()
