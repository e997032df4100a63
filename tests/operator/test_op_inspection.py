"""The inspection commands against a real node that ran real jobs: counts match what was sent and run."""

from __future__ import annotations

import hashlib
import json
import uuid

from operator_support import Node

from hypernode_host.core.slots import CPU_QUEUE
from hypernode_host.ops.deadletters import DROPPED_REASON
from hypernode_host.state import keys
from hypernode_host.tasks.dramatiq_redis import queue_key
from support import wait_for

BLOCKER = "import time\nprint('holding the slot', flush=True)\ntime.sleep(120)\n"


def _job_ids(rows: list[dict[str, object]]) -> list[object]:
    return [row["id"] for row in rows]


def _hold_the_slot(node: Node) -> str:
    """A job that keeps the only slot busy until it is cancelled; returns once it runs."""
    blocker = node.send(script=BLOCKER)
    wait_for(lambda: node.cli_json("workers")["workers"][0]["current_job"] == blocker, timeout=30)
    return blocker


def test_jobs_and_job_show_what_ran(node: Node) -> None:
    secret_line = f"print('payload {uuid.uuid4().hex}')"
    ok = node.run(script=f"{secret_line}\nprint('step 1')\nprint('done')\n")
    bad = node.run(script="import sys\nprint('bad input')\nsys.exit(3)\n")
    last = node.run(command="echo finished")

    rows = node.cli_json("jobs", "--limit", "3")["jobs"]
    assert _job_ids(rows) == [last["id"], bad["id"], ok["id"]]  # newest first
    by_id = {row["id"]: row for row in rows}
    assert by_id[ok["id"]]["status"] == "completed" and by_id[ok["id"]]["exit_code"] == 0
    assert by_id[bad["id"]]["status"] == "failed" and by_id[bad["id"]]["exit_code"] == 3
    assert by_id[bad["id"]]["reason"] == "exit_code" and by_id[ok["id"]]["reason"] is None
    assert all(row["state"] in ("finished", "reported") and row["slot"] == 0 for row in rows)
    for row, result in zip(rows, [last, bad, ok], strict=True):
        assert row["attempt"] == 1 and row["duration_ms"] == result["durationMs"]

    table = node.cli("jobs", "--limit", "3")
    assert table.returncode == 0 and all(r["id"] in table.stdout for r in (ok, bad, last))

    failed = node.cli_json("jobs", "--status", "failed", "--limit", "100")["jobs"]
    assert bad["id"] in _job_ids(failed) and ok["id"] not in _job_ids(failed)

    detail = node.cli_json("job", ok["id"], "--lines", "2")
    script = f"{secret_line}\nprint('step 1')\nprint('done')\n"
    assert detail["spec"]["kind"] == "script"
    assert detail["spec"]["script_sha256"] == hashlib.sha256(script.encode()).hexdigest()
    assert detail["log_tail"] == ["step 1", "done"]
    assert detail["exit_code"] == 0 and detail["status"] == "completed"
    assert detail["proofs"]["executionHash"] == ok["executionHash"]
    assert detail["proofs"]["signature"] == ok["signature"]
    record = node.record(ok["id"])
    assert detail["timeline"] == {
        "received": int(record["received_at"]),  # the bridge's clock
        "started": ok["startedAt"],  # the container's, as Docker reports it
        "completed": ok["completedAt"],
        "stored": int(record["finished_at"]),  # the worker's
    }

    shown = node.cli("job", ok["id"])
    assert shown.returncode == 0, shown.stderr
    assert ok["id"] in shown.stdout and "executionHash" in shown.stdout
    assert secret_line not in shown.stdout and secret_line not in json.dumps(detail)  # never the script

    missing = node.cli("job", "no-such-job")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no job 'no-such-job' on this node"


def test_queue_workers_and_cancel(node: Node) -> None:
    blocker = _hold_the_slot(node)
    waiting = [node.send(script=f"print('queued job {i} done')") for i in range(3)]

    def cpu_queue() -> dict[str, object]:
        return next(q for q in node.cli_json("queue")["queues"] if q["queue"] == CPU_QUEUE)

    wait_for(lambda: cpu_queue()["ready"] == 3, timeout=20)
    stats = cpu_queue()
    assert stats["in_flight"] == 1 and stats["dead"] == 0
    assert stats["oldest_age_s"] is not None and stats["oldest_age_s"] >= 0
    queued = node.cli_json("jobs", "--state", "queued")["jobs"]
    assert sorted(_job_ids(queued)) == sorted(waiting)
    running = node.cli_json("jobs", "--state", "running")["jobs"]
    assert _job_ids(running) == [blocker]
    (worker,) = node.cli_json("workers")["workers"]
    assert worker["alive"] and worker["slot"] == 0 and worker["current_job"] == blocker
    assert worker["queues"] == [CPU_QUEUE] and worker["pid"] > 0

    shown = node.cli("top", "--once")
    assert shown.returncode == 0, shown.stderr
    assert "queued 3, running 1" in shown.stdout and blocker in shown.stdout
    live = node.cli("top", "--iterations", "2", "--interval", "0.2")  # the refreshing view, twice
    assert live.returncode == 0 and "queued 3, running 1" in live.stdout
    snapshot = node.cli_json("top")
    assert snapshot["node"]["queued"] == 3 and snapshot["node"]["running"] == 1
    assert snapshot["workers"][0]["current_job"] == blocker

    assert node.cli("cancel", waiting[0]).returncode == 0  # queued: it must never start
    assert node.cli_json("job", waiting[0])["cancel_requested"] is True
    done = node.cli("cancel", blocker)
    assert done.returncode == 0 and f"job {blocker}: cancel requested (running)" in done.stdout

    stopped = node.result(blocker)
    assert stopped["status"] == "cancelled" and "holding the slot" in stopped["logs"]
    never = node.result(waiting[0])
    assert never["status"] == "cancelled" and never["exitCode"] == -1 and never["durationMs"] == 0
    assert [node.result(j)["status"] for j in waiting[1:]] == ["completed", "completed"]
    wait_for(lambda: cpu_queue()["ready"] == 0 and cpu_queue()["in_flight"] == 0, timeout=20)

    again = node.cli("cancel", blocker, "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["cancel_requested"] is False


def _dead_letter(node: Node) -> str:
    """A job whose run raises, for real: its record is damaged while it waits behind a blocker, so that Redis
    refuses the worker's claim (HINCRBY on an attempt count that is no integer).

    The worker's actor has max_retries=0, so Dramatiq nacks the message into the queue's
    dead-letter set (``.XQ``) when the run raises. (A job whose stored copy cannot be read no longer
    raises: the runner ends it with an ``invalid_job`` result. Only a fault below the runner, in Redis,
    still dead-letters a job.)
    """
    blocker = _hold_the_slot(node)
    victim = node.send(script="print('ran after the requeue: done')")
    wait_for(lambda: node.record(victim).get("enqueued") == "1", timeout=20)
    node.redis.hset(keys.JOB.format(job_id=victim), "attempt", "damaged")
    node.backend.cancel(blocker)
    assert node.result(blocker)["status"] == "cancelled"
    wait_for(lambda: victim in _job_ids_of_dead(node), timeout=30)
    return victim


def _job_ids_of_dead(node: Node) -> list[str]:
    return [d["job_id"] for d in node.cli_json("dead")["dead"]]


def test_dead_requeue_runs_the_job_again(node: Node) -> None:
    victim = _dead_letter(node)
    (dead,) = [d for d in node.cli_json("dead")["dead"] if d["job_id"] == victim]
    assert dead["queue"] == CPU_QUEUE and dead["state"] in ("queued", "running")
    assert node.redis.zcard(queue_key(CPU_QUEUE, ".XQ")) == 1
    assert next(q for q in node.cli_json("queue")["queues"] if q["queue"] == CPU_QUEUE)["dead"] == 1

    # The operator repairs what made it fail, then requeues it.
    job = {"id": victim, "script": "print('ran after the requeue: done')", "memoryLimit": "256m", "cpuLimit": 1.0}
    node.redis.hset(keys.JOB.format(job_id=victim), mapping={"job": json.dumps(job), "attempt": 0})
    done = node.cli("dead", "requeue", victim)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"requeued 1 job(s): {victim}"

    result = node.result(victim)
    assert result["status"] == "completed" and "ran after the requeue" in result["logs"]
    assert node.cli_json("dead")["dead"] == []
    unknown = node.cli("dead", "requeue", victim)
    assert unknown.returncode == 1 and "no dead-lettered message" in unknown.stderr


def test_dead_purge_ends_the_job_with_an_error_result(node: Node) -> None:
    victim = _dead_letter(node)

    done = node.cli("dead", "purge", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["purged"] == [victim]

    result = node.result(victim)  # the backend still hears about the job it sent
    assert result["status"] == "error" and result["logs"] == DROPPED_REASON
    assert result["reason"] == "operator_dropped"
    assert node.cli_json("dead")["dead"] == []
    assert node.redis.hlen(queue_key(CPU_QUEUE, ".XQ.msgs")) == 0
