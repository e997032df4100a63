"""What an operator sees: queues, jobs and workers, read from Redis with the layout the code writes.

Each view costs a few pipelined round trips whatever the length of the queues: counts come
from LLEN/HLEN/SCARD/ZCARD, and job listings read only the records they show. Our keys are
named in constants.py and store.py; Dramatiq's (RedisBroker, dramatiq/brokers/redis/dispatch.lua)
are ``<namespace>:<queue>`` (list of ready message ids), ``.msgs`` (id -> message, ready and
fetched), ``.DQ``/``.DQ.msgs`` (delayed), ``.XQ`` (zset of dead-lettered ids by time) and
``.XQ.msgs``, ``__acks__.<broker id>.<queue>`` (fetched, not yet acked, per consumer process)
and ``__heartbeats__`` (zset of broker ids by last command). Dead letters: deadletters.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from hypernode_host import constants as C
from hypernode_host.errors import HypernodeError
from hypernode_host.gpu import registry
from hypernode_host.gpu.models import Slot
from hypernode_host.jobs import JobState, Status
from hypernode_host.store import FINISHED_INDEX, Store, now_ms

LIST_FIELDS = ("id", "state", "status", "queue", "slot", "attempt", "received_at", "finished_at")
PAGE = 1000  # most records read per pipeline while filtering the job index
SCAN_LIMIT = 20_000  # newest records a filtered listing looks at, so it stays fast on a huge backlog
SET_LIMIT = 10_000  # a queued/running set up to this size is read whole and sorted by receipt


class UnknownJob(HypernodeError):
    """No job (or no dead letter) with that id."""


def dramatiq_key(queue: str, suffix: str = "") -> str:
    return f"{C.DRAMATIQ_NAMESPACE}:{queue}{suffix}"


def _acks_key(broker_id: str, queue: str) -> str:
    return f"{C.DRAMATIQ_NAMESPACE}:__acks__.{broker_id}.{queue}"


def _heartbeats_key() -> str:
    return f"{C.DRAMATIQ_NAMESPACE}:__heartbeats__"


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _age_s(at_ms: int | None, now: int) -> float | None:
    return None if not at_ms else max(now - at_ms, 0) / 1000


def _split(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def worker_registrations(store: Store) -> dict[tuple[str, int], dict[str, str]]:
    """Live worker registrations by (host, slot): several hosts can share one Redis."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for info in registry.registrations(store.redis):
        if "slot" in info:
            found[(info.get("host", ""), _int(info["slot"]))] = info
    return found


# Queues -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    queue: str
    ready: int  # waiting for a worker
    delayed: int
    in_flight: int  # fetched by a worker, not yet acknowledged
    dead: int  # dead-lettered (the actor raised)
    oldest_age_s: float | None  # age of the message at the head of the queue


def known_queues(store: Store, slots: Sequence[Slot]) -> list[str]:
    """The CPU queue, this node's slot queues and any queue a live worker (of any host) serves."""
    names = {C.CPU_QUEUE, *(q for s in slots for q in s.queues)}
    for info in worker_registrations(store).values():
        names.update(_split(info.get("queues") or info.get("queue", "")))
    return sorted(names)


def queue_stats(store: Store, queues: Sequence[str]) -> list[QueueStats]:
    """Counts per queue in two pipelined round trips, however long the queues are."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.zrange(_heartbeats_key(), 0, -1)
    for queue in queues:
        pipe.llen(dramatiq_key(queue))
        pipe.hlen(dramatiq_key(queue, ".DQ.msgs"))
        pipe.zcard(dramatiq_key(queue, ".XQ"))
        pipe.lindex(dramatiq_key(queue), 0)
    brokers, *rest = pipe.execute()
    per_queue = [rest[i : i + 4] for i in range(0, len(rest), 4)]
    pipe = store.redis.pipeline(transaction=False)
    for queue, (_, _, _, head) in zip(queues, per_queue, strict=True):
        for broker_id in brokers:
            pipe.scard(_acks_key(broker_id, queue))
        pipe.hget(dramatiq_key(queue, ".msgs"), head or "")
    answers = iter(pipe.execute())
    now = now_ms()
    stats = []
    for queue, (ready, delayed, dead, _) in zip(queues, per_queue, strict=True):
        in_flight = sum(_int(next(answers)) for _ in brokers)
        head_message = next(answers)
        enqueued_at = _int(json.loads(head_message).get("message_timestamp")) if head_message else None
        stats.append(QueueStats(queue, _int(ready), _int(delayed), in_flight, _int(dead), _age_s(enqueued_at, now)))
    return stats


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
    """The newest ``limit`` jobs, optionally only those in ``state`` or ended with ``status``.

    Unfiltered, it reads exactly ``limit`` records. Queued and running jobs come from their
    sets, finished ones from the index of finished jobs (newest result first), so a backlog of
    queued jobs never hides them; a filtered walk reads at most SCAN_LIMIT records.
    """
    ids: list[str] | None
    if state is None and status is None:
        ids = cast(list[str], store.redis.zrevrange(C.JOB_INDEX, 0, limit - 1))
    elif state in (JobState.QUEUED, JobState.RUNNING):
        if status is not None:
            return []  # only finished jobs have a status
        ids = _ids_from_set(store, C.QUEUED_SET if state is JobState.QUEUED else C.RUNNING_SET, limit)
        if ids is None:
            ids = _scan(store, C.JOB_INDEX, limit, lambda s, _: s == state)
    else:
        ids = _scan(store, FINISHED_INDEX, limit, lambda s, t: state in (None, s) and status in (None, t))
    return _rows(store, ids, _slot_gpus(slots))


def _ids_from_set(store: Store, key: str, limit: int) -> list[str] | None:
    """Newest first from a small set; None when the set is too big to sort here."""
    if _int(store.redis.scard(key)) > SET_LIMIT:
        return None
    members = sorted(cast(set[str], store.redis.smembers(key)))
    if not members:
        return []
    scores = store.redis.zmscore(C.JOB_INDEX, members)
    ranked = sorted(zip(members, scores, strict=True), key=lambda pair: pair[1] or 0, reverse=True)
    return [job_id for job_id, _ in ranked[:limit]]


def _scan(store: Store, index: str, limit: int, keep: Callable[[str | None, str | None], bool]) -> list[str]:
    """Ids from ``index`` (newest first) whose record's (state, status) ``keep`` accepts."""
    found: list[str] = []
    page = min(max(2 * limit, 100), PAGE)  # small first pages: the newest records usually suffice
    start = 0
    while start < SCAN_LIMIT:
        ids = cast(list[str], store.redis.zrevrange(index, start, start + page - 1))
        pipe = store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(C.JOB_KEY.format(job_id=job_id), "state", "status")
        for job_id, (state, status) in zip(ids, pipe.execute(), strict=True):
            if keep(state, status):
                found.append(job_id)
                if len(found) == limit:
                    return found
        if len(ids) < page:
            break
        start += page
        page = min(page * 2, PAGE)
    return found


def _rows(store: Store, ids: Sequence[str], gpus: dict[int, list[str]]) -> list[JobRow]:
    pipe = store.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(C.JOB_KEY.format(job_id=job_id), *LIST_FIELDS, "result")
    rows = []
    for job_id, values in zip(ids, pipe.execute(), strict=True):
        record = dict(zip((*LIST_FIELDS, "result"), values, strict=True))
        if record["state"] is None:
            continue  # removed between the index read and now
        result = json.loads(record["result"]) if record["result"] else {}
        slot = _int(record["slot"], -1) if record["slot"] is not None else None
        rows.append(
            JobRow(
                id=job_id,
                state=record["state"],
                status=record["status"],
                queue=record["queue"] or "",
                slot=slot,
                gpus=gpus.get(slot, []) if slot is not None else [],
                attempt=_int(record["attempt"]),
                received_at=_int(record["received_at"]),
                finished_at=_int(record["finished_at"]) or None,
                exit_code=result.get("exitCode"),
                duration_ms=result.get("durationMs"),
            )
        )
    return rows


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


PROOF_FIELDS = ("jobDigest", "image", "logsHash", "fullLogsHash", "executionHash", "signature", "nodePublicKey")


def job_detail(store: Store, job_id: str, tail_lines: int = 20) -> JobDetail:
    """Everything known about one job; UnknownJob when there is no such record."""
    record = store.job(job_id)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} on this node")
    result = json.loads(record["result"]) if record.get("result") else {}
    lines = str(result.get("logs", "")).splitlines()
    return JobDetail(
        id=job_id,
        state=record.get("state", ""),
        status=record.get("status"),
        queue=record.get("queue", ""),
        slot=_int(record["slot"]) if "slot" in record else None,
        attempt=_int(record.get("attempt")),
        container=record.get("container"),
        cancel_requested=store.cancel_requested(job_id),
        spec=summarize_spec(received_job(record)),
        timeline={
            "received": _int(record.get("received_at")) or None,
            "started": result.get("startedAt") or None,
            "completed": result.get("completedAt") or None,
            "stored": _int(record.get("finished_at")) or None,
        },
        exit_code=result.get("exitCode"),
        oom_killed=result.get("oomKilled"),
        duration_ms=result.get("durationMs"),
        proofs={name: result[name] for name in PROOF_FIELDS if name in result},
        log_bytes=result.get("logBytes"),
        truncated=result.get("truncated"),
        log_tail=lines[-tail_lines:] if tail_lines > 0 else [],
    )


def summarize_spec(job: dict[str, Any]) -> dict[str, Any]:
    """What an operator needs to know about a job's spec without its payload (scripts and env values stay out)."""
    summary: dict[str, Any] = {}
    if isinstance(job.get("script"), str):
        script = job["script"].encode()
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
        summary["env"] = sorted(job["env"])  # names only: values may be secrets
    if job.get("datasets"):
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
    healthy: bool | None  # whether it takes jobs (its GPUs pass their checks); None when not alive
    health: str
    pid: int | None
    seen_at: int | None  # epoch ms of its last registration refresh
    current_job: str | None


def workers_view(store: Store, slots: Sequence[Slot], host: str) -> list[WorkerRow]:
    """Every slot of this node (``host``) and every live worker of any host, with the job each one runs."""
    registered = worker_registrations(store)
    running = sorted(cast(set[str], store.redis.smembers(C.RUNNING_SET)))
    pipe = store.redis.pipeline(transaction=False)
    for job_id in running:
        pipe.hget(C.JOB_KEY.format(job_id=job_id), "slot")
    # Slot numbers alone are ambiguous across hosts: this is the fallback for registrations without "job".
    running_on = {_int(slot, -1): job_id for job_id, slot in zip(running, pipe.execute(), strict=True) if slot}
    planned = {(host, s.id): s for s in slots}
    rows = []
    for key in sorted(planned.keys() | registered.keys()):
        info = registered.get(key, {})
        plan = planned.get(key)
        alive = bool(info)
        rows.append(
            WorkerRow(
                host=key[0],
                slot=key[1],
                queues=_split(info.get("queues") or info.get("queue", "")) or (list(plan.queues) if plan else []),
                gpus=_split(info.get("gpus", "")) or (list(plan.gpu_uuids) if plan else []),
                alive=alive,
                healthy=info.get("healthy", "1") == "1" if alive else None,
                health=info.get("health", "ok") if alive else "not running",
                pid=_int(info["pid"]) if info.get("pid") else None,
                seen_at=_int(info["seen_at"]) if info.get("seen_at") else None,
                current_job=(info.get("job") if "job" in info else running_on.get(key[1])) or None,
            )
        )
    return rows


def received_job(record: dict[str, str]) -> dict[str, Any]:
    """The job as received, for the result's jobDigest; just its id when the stored copy is damaged
    (a damaged record is one way a run raises and lands here)."""
    try:
        job = json.loads(record.get("job") or "")
    except ValueError:
        return {"id": record["id"]}
    return job if isinstance(job, dict) else {"id": record["id"]}


# Cancel and node summary ----------------------------------------------------------------------


def cancel_job(store: Store, job_id: str) -> str:
    """Ask for a job to be cancelled; its state now. A finished job's flag is not set.

    The runner stops a running job at its next wait slice; a queued job ends as cancelled
    without a container when a worker takes it.
    """
    record = store.job(job_id)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} on this node")
    state = record.get("state", "")
    if state in (JobState.QUEUED, JobState.RUNNING):
        store.request_cancel(job_id)
    return state


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


def node_summary(store: Store) -> NodeSummary:
    """The node at a glance, in one round trip plus the worker registrations."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(C.NODE_KEY)
    pipe.zcard(C.JOB_INDEX)
    pipe.scard(C.QUEUED_SET)
    pipe.scard(C.RUNNING_SET)
    pipe.xlen(C.REPLY_STREAM)
    node, jobs, queued, running, outbox = pipe.execute()
    now = now_ms()
    return NodeSummary(
        node_id=node.get("node_id"),
        registered_at=_int(node.get("registered_at")) or None,
        heartbeat_age_s=_age_s(_int(node.get("heartbeat_at")) or None, now),
        reconnects=_int(node.get("reconnects")),
        jobs=_int(jobs),
        queued=_int(queued),
        running=_int(running),
        outbox=_int(outbox),
        by_status=store.status_counts(),
        workers_alive=len(worker_registrations(store)),
    )
