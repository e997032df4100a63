"""Retention benchmark: Redis bytes per retained job and per tombstone, and memory flat over a long run.

Part 1 (a private Redis, the agent's own state code): N jobs of a 10 KB script with 5 KB of output
go through the whole life a job has in Redis (recorded, claimed, finished, acknowledged); Redis's
``used_memory`` is read before, with every record full, after compaction to tombstones, and after
the tombstones are forgotten.

Part 2 (the real stack: `up` with one CPU slot, the reference backend, real containers): jobs run
one after another with HN_JOB_RETENTION and HN_TOMBSTONE_RETENTION of a few seconds, and Redis's
memory and key count are sampled as they go: flat once the first tombstones are forgotten.

Prints the numbers; asserts nothing. ``make bench-retention`` runs it.

    .venv/bin/python bench/retention.py [--records 500] [--jobs 150] [--retention 3] [--tombstones 3]
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any, cast

import redis

from hypernode_host.core.clock import now_ms
from hypernode_host.core.slots import CPU_QUEUE
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store, keys

from stack import running_stack

SCRIPT = "# " + "x" * 10_000 + "\nprint('done')\n"  # a 10 KB script
LOGS = "y" * 5_000  # and 5 KB of output


def used_memory(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("memory"))["used_memory"])


def life(store: Store, job_id: str) -> None:
    """Everything a job writes in Redis from its receipt to its settlement (Dramatiq's message aside,
    which is deleted when acknowledged)."""
    store.jobs.record(job_id, {"id": job_id, "script": SCRIPT}, CPU_QUEUE)
    store.jobs.mark_enqueued(job_id)
    store.jobs.claim(job_id, "bench", 0, f"hn-job-{job_id}")
    result = {"id": job_id, "status": "completed", "exitCode": 0, "durationMs": 1234, "logs": LOGS}
    result |= {"executionHash": secrets.token_hex(32), "signature": secrets.token_hex(64)}
    store.jobs.finish(job_id, result)
    entry = store.jobs.get(job_id)
    assert entry is not None and entry.entry is not None
    store.outbox.acknowledge(entry.entry, job_id)


def per_record(records: int) -> dict[str, float]:
    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = Store(client)
        life(store, "warm-up")  # scripts loaded, the counters and indexes exist
        base = used_memory(client)
        for i in range(records):
            life(store, f"job-{i:06d}")
        full = used_memory(client)
        at = now_ms() + 1
        while store.jobs.compact(at, at):
            pass
        compacted = used_memory(client)
        while store.jobs.forget(at + 1):
            pass
        time.sleep(2)  # Redis shrinks its key table on its own timer, not at once
        forgotten = used_memory(client)
        client.close()
    return {
        "records": records,
        "bytes_per_full_record": round((full - base) / records),
        "bytes_per_tombstone": round((compacted - base) / records),
        "bytes_left_per_job_after_forgetting": round((forgotten - base) / records),
    }


def long_run(jobs: int, retention_s: int, tombstones_s: int) -> list[dict[str, int]]:
    samples: list[dict[str, int]] = []
    settings = {"HN_CPU_SLOTS": "1", "HN_JOB_RETENTION": str(retention_s), "HN_TOMBSTONE_RETENTION": str(tombstones_s)}
    with running_stack(**settings) as stack:
        client = stack.redis()
        started = time.monotonic()
        every = max(jobs // 10, 1)
        for i in range(jobs):
            job_id = f"long-{i:05d}-{secrets.token_hex(3)}"
            stack.backend.send_job({"id": job_id, "script": SCRIPT + f"print('x' * {len(LOGS)})\n"})
            stack.backend.wait_for_result(job_id, timeout=120)
            if i % every == every - 1:
                full, tomb = client.zcard(keys.SETTLED), client.zcard(keys.TOMBSTONES)
                samples.append(
                    {
                        "jobs": i + 1,
                        "seconds": round(time.monotonic() - started),
                        "used_memory": used_memory(client),
                        "keys": int(client.dbsize()),
                        "full_records": int(full),
                        "tombstones": int(tomb),
                        "job_records": int(client.zcard(keys.JOB_INDEX)),
                    }
                )
        client.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500, help="jobs of part 1")
    parser.add_argument("--jobs", type=int, default=150, help="real jobs of part 2 (0: skip it)")
    parser.add_argument("--retention", type=int, default=3, help="HN_JOB_RETENTION of part 2, s")
    parser.add_argument("--tombstones", type=int, default=3, help="HN_TOMBSTONE_RETENTION of part 2, s")
    args = parser.parse_args()
    sizes = per_record(args.records)
    print(f"part 1: {sizes['records']} jobs of a 10 KB script and 5 KB of output, through their whole life")
    print(f"  bytes per full record (job, result, logs, indexes):  {sizes['bytes_per_full_record']:>8}")
    print(f"  bytes per tombstone (id, status, digest, times):     {sizes['bytes_per_tombstone']:>8}")
    print(f"  bytes per job once its tombstone is forgotten:       {sizes['bytes_left_per_job_after_forgetting']:>8}")
    if args.jobs <= 0:
        return
    print(f"part 2: {args.jobs} real jobs, HN_JOB_RETENTION={args.retention} HN_TOMBSTONE_RETENTION={args.tombstones}")
    print(f"  {'jobs':>6} {'s':>5} {'used_memory':>12} {'keys':>6} {'full':>5} {'tombs':>6} {'records':>8}")
    for s in long_run(args.jobs, args.retention, args.tombstones):
        print(
            f"  {s['jobs']:>6} {s['seconds']:>5} {s['used_memory']:>12} {s['keys']:>6} {s['full_records']:>5}"
            f" {s['tombstones']:>6} {s['job_records']:>8}"
        )


if __name__ == "__main__":
    main()
