"""What an operator sees: jobs, workers and the node, read from the typed records of state/.

Each view costs a few pipelined round trips whatever the backlog (state/jobs.py says how).
Queue counts and dead letters are Dramatiq's: tasks/dramatiq_redis.py reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import JobState, Status
from hypernode_host.core.slots import CPU_QUEUE, Slot
from hypernode_host.core.uptime import uptimes
from hypernode_host.errors import UnknownJob
from hypernode_host.state import Store
from hypernode_host.state.records import JobRecord, Registration


def _age_s(at_ms: int | None, now: int) -> float | None:
    return None if not at_ms else max(now - at_ms, 0) / 1000


def worker_registrations(store: Store) -> dict[tuple[str, int], Registration]:
    """Live worker registrations by (host, slot): several hosts can share one Redis."""
    return {(r.host, r.slot.id): r for r in store.registry.all()}


# Queues -------------------------------------------------------------------------------------


def known_queues(store: Store, slots: Sequence[Slot]) -> list[str]:
    """The CPU queue, this node's slot queues and any queue a live worker (of any host) serves."""
    names = {CPU_QUEUE, *(q for s in slots for q in s.queues)}
    for registration in store.registry.all():
        names.update(registration.slot.queues)
    return sorted(names)


# Jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    id: str
    state: str
    status: str | None
    queue: str
    slot: int | None
    gpus: list[str]
    attempt: int
    received_at: int
    finished_at: int | None
    exit_code: int | None
    duration_ms: int | None  # the container's run time (finished jobs)
    rejection: str | None = None  # the backend's text, when it refused the result (state rejected)
    reason: str | None = None  # why it did not complete (core/jobs.py Reason)
    progress: dict[str, Any] | None = None  # the latest HN-PROGRESS a job reported: {percent, message}
    compacted_at: int | None = None  # when retention shrank it to a tombstone (HN_JOB_RETENTION)
    pull: str | None = None  # its image pull now, with bytes and percent (a running job's first phase)


def _slot_gpus(slots: Sequence[Slot]) -> dict[int, list[str]]:
    """GPU UUIDs of each slot of this node."""
    return {s.id: list(s.gpu_uuids) for s in slots}


def recent_jobs(
    store: Store,
    slots: Sequence[Slot],
    limit: int = 20,
    state: JobState | None = None,
    status: Status | None = None,
) -> list[JobRow]:
    """The newest ``limit`` jobs, optionally only those in ``state`` or ended with ``status`` (state/jobs.py
    says how few records that reads)."""
    gpus = _slot_gpus(slots)
    return [_row(record, gpus, _pull(store, record)) for record in store.jobs.recent(limit, state, status)]


def _pull(store: Store, record: JobRecord) -> str | None:
    """The image pull a running job is in, in one line; None when it pulls nothing."""
    if record.state is not JobState.RUNNING:
        return None
    phase = store.images.pull(record.id)
    return phase.describe() if phase is not None else None


def _row(record: JobRecord, gpus: dict[int, list[str]], pull: str | None = None) -> JobRow:
    result = record.result()
    return JobRow(
        id=record.id,
        state=record.state or "",
        status=record.status,
        queue=record.queue,
        slot=record.slot,
        gpus=gpus.get(record.slot, []) if record.slot is not None else [],
        attempt=record.attempt,
        received_at=record.received_at,
        finished_at=record.finished_at,
        exit_code=result.get("exitCode"),
        duration_ms=result.get("durationMs"),
        rejection=record.rejection,
        reason=result.get("reason"),
        progress=_progress(record),
        compacted_at=record.compacted_at,
        pull=pull,
    )


def _progress(record: JobRecord) -> dict[str, Any] | None:
    """The latest progress the job reported, if it is a well-formed one."""
    try:
        value = json.loads(record.progress_json) if record.progress_json else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class JobDetail:
    id: str
    state: str
    status: str | None
    queue: str
    slot: int | None
    attempt: int
    container: str | None
    cancel_requested: bool
    spec: dict[str, Any]  # a summary: sizes and digests, never the script itself
    timeline: dict[str, int | None]  # epoch ms of each step reached
    exit_code: int | None
    oom_killed: bool | None
    duration_ms: int | None
    proofs: dict[str, Any]
    log_bytes: int | None
    truncated: bool | None
    log_tail: list[str] = field(default_factory=list)
    rejection: str | None = None  # the backend's text, when it refused the result
    progress: dict[str, Any] | None = None  # the latest HN-PROGRESS it reported
    # Retention (HN_JOB_RETENTION) shrank the record to a tombstone: the job, its result and its logs
    # are gone; what is left is its final state and status, its times and the result's SHA-256.
    compacted_at: int | None = None
    result_sha256: str | None = None
    pull: str | None = None  # its image pull now, with bytes and percent


PROOF_FIELDS = ("jobDigest", "image", "logsHash", "fullLogsHash", "executionHash", "signature", "nodePublicKey")


def job_detail(store: Store, job_id: str, tail_lines: int = 20) -> JobDetail:
    """Everything known about one job; UnknownJob when there is no such record."""
    record = store.jobs.get(job_id)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} on this node")
    result = record.result()
    lines = str(result.get("logs", "")).splitlines()
    return JobDetail(
        id=job_id,
        state=record.state or "",
        status=record.status,
        queue=record.queue,
        slot=record.slot,
        attempt=record.attempt,
        container=record.container,
        cancel_requested=store.cancels.requested(job_id),
        spec=summarize_spec(record.received_job()),
        timeline=_timeline(record, result),
        exit_code=result.get("exitCode"),
        oom_killed=result.get("oomKilled"),
        duration_ms=result.get("durationMs"),
        proofs={name: result[name] for name in PROOF_FIELDS if name in result},
        log_bytes=result.get("logBytes"),
        truncated=result.get("truncated"),
        log_tail=lines[-tail_lines:] if tail_lines > 0 else [],
        rejection=record.rejection,
        progress=_progress(record),
        compacted_at=record.compacted_at,
        result_sha256=record.result_sha256,
        pull=_pull(store, record),
    )


def _timeline(record: JobRecord, result: dict[str, Any]) -> dict[str, int | None]:
    timeline = {
        "received": record.received_at or None,
        "started": result.get("startedAt") or None,
        "completed": result.get("completedAt") or None,
        "stored": record.finished_at or None,
    }
    if record.rejected_at is not None:  # the backend refused the result
        timeline["rejected"] = record.rejected_at
    if record.compacted_at is not None:
        timeline["compacted"] = record.compacted_at
    return timeline


def summarize_spec(job: dict[str, Any]) -> dict[str, Any]:
    """What an operator needs to know about a job's spec without its payload (scripts and env values stay out)."""
    summary: dict[str, Any] = {}
    if isinstance(job.get("script"), str):
        script = job["script"].encode("utf-8", "surrogatepass")  # total: a record from before the codec refused them
        summary |= {"kind": "script", "script_bytes": len(script), "script_sha256": hashlib.sha256(script).hexdigest()}
    elif job.get("command") is not None:
        command = job["command"] if isinstance(job["command"], str) else " ".join(map(str, job["command"]))
        summary |= {"kind": "command", "command": command if len(command) <= 80 else command[:77] + "..."}
    for name in ("image", "gpuRequired", "gpuCount", "gpuMemoryMb", "memoryLimit", "cpuLimit", "timeout"):
        if job.get(name) is not None:
            summary[name] = job[name]
    if job.get("estimatedTime") is not None:
        summary["estimatedTime"] = job["estimatedTime"]
    if job.get("requirements"):
        summary["requirements"] = len(str(job["requirements"]).split())
    if isinstance(job.get("env"), dict) and job["env"]:
        summary["env"] = sorted(map(str, job["env"]))  # names only: values may be secrets
    if isinstance(job.get("datasets"), list | dict | str) and job["datasets"]:
        summary["datasets"] = len(job["datasets"])
    return summary


# Workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    host: str
    slot: int
    queues: list[str]
    gpus: list[str]
    alive: bool  # registered, and its registration has not expired
    healthy: bool | None  # whether its GPUs pass their checks; None when not alive
    health: str  # why it takes no jobs ("ok" while it serves)
    pid: int | None
    seen_at: int | None  # epoch ms of its last registration refresh
    current_job: str | None
    state: str = "down"  # serving, busy, draining, unhealthy (core/slots.py SlotState), or down


def workers_view(store: Store, slots: Sequence[Slot], host: str) -> list[WorkerRow]:
    """Every slot of this node (``host``), every live worker of any host, and every worker of another
    host that vanished without a clean stop (down), grouped by host, with the job each one runs."""
    registered = worker_registrations(store)
    planned = {(host, s.id): s for s in slots}
    vanished = set(store.registry.members()) - registered.keys() - planned.keys()
    keys = sorted(planned.keys() | registered.keys() | vanished)
    return [_worker_row(key, registered.get(key), planned.get(key)) for key in keys]


@dataclass(frozen=True)
class HostRow:
    """One host of the node and the health of its workers, for `workers` and `top`."""

    host: str
    workers: int
    serving: int
    down: int
    other: dict[str, int]  # busy, draining, unhealthy: how many

    def describe(self) -> str:
        if self.down == self.workers:
            return f"{self.host}: lost: none of its {self.workers} worker(s) is alive"
        parts = [f"{self.serving} of {self.workers} serving"]
        parts += [f"{n} {state}" for state, n in sorted(self.other.items())]
        parts += [f"{self.down} down"] if self.down else []
        return f"{self.host}: {', '.join(parts)}"


def hosts_view(rows: Sequence[WorkerRow]) -> list[HostRow]:
    """The workers' rows summed up per host."""
    hosts: dict[str, list[WorkerRow]] = {}
    for row in rows:
        hosts.setdefault(row.host, []).append(row)
    summary = []
    for host, mine in sorted(hosts.items()):
        other: dict[str, int] = {}
        for row in mine:
            if row.alive and row.state != "serving":
                other[row.state] = other.get(row.state, 0) + 1
        serving = sum(1 for r in mine if r.alive and r.state == "serving")
        summary.append(HostRow(host, len(mine), serving, sum(1 for r in mine if not r.alive), other))
    return summary


def _worker_row(key: tuple[str, int], worker: Registration | None, plan: Slot | None) -> WorkerRow:
    if worker is None:
        queues, gpus = (list(plan.queues), list(plan.gpu_uuids)) if plan is not None else ([], [])
        return WorkerRow(
            *key,
            queues,
            gpus,
            alive=False,
            healthy=None,
            health="not running",
            pid=None,
            seen_at=None,
            current_job=None,
        )
    return WorkerRow(
        *key,
        queues=list(worker.slot.queues),
        gpus=list(worker.slot.gpu_uuids),
        alive=True,
        healthy=worker.healthy,
        health=worker.health,
        pid=worker.pid or None,
        seen_at=worker.seen_at,
        current_job=worker.job or None,
        state=worker.state.value,
    )


# Node summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSummary:
    node_id: str | None
    registered_at: int | None
    heartbeat_age_s: float | None
    reconnects: int
    jobs: int
    queued: int
    running: int
    outbox: int
    by_status: dict[str, int]
    workers_alive: int
    refused: str | None = None  # the backend's text while it refuses the node token
    results_rejected: int = 0  # results the backend answered with an error
    by_reason: dict[str, int] = field(default_factory=dict)  # jobs that did not complete, by reason
    # window ("24h", "7d", "30d") -> the share of it the node was registered (None: not observed yet)
    uptime: dict[str, float | None] = field(default_factory=dict)
    uptime_total_s: int = 0  # registered in all (the heartbeat's total_uptime)


def node_summary(store: Store) -> NodeSummary:
    """The node at a glance: its hash, the job counts, the outbox and the live workers."""
    node = store.node.get()
    queued, running = store.jobs.active_counts()
    hours, first_seen, total_ms = store.uptime.read()
    return NodeSummary(
        node_id=node.node_id,
        registered_at=node.registered_at,
        heartbeat_age_s=_age_s(node.heartbeat_at, now_ms()),
        reconnects=node.reconnects,
        jobs=store.jobs.total(),
        queued=queued,
        running=running,
        outbox=store.outbox.size(),
        by_status=store.stats.status_counts(),
        by_reason=store.stats.reason_counts(),
        workers_alive=len(store.registry.all()),
        refused=node.refused,
        results_rejected=node.results_rejected,
        uptime={u.window: u.ratio for u in uptimes(hours, first_seen, now_ms())},
        uptime_total_s=total_ms // 1000,
    )
