"""What Redis holds, as frozen dataclasses: each hash is decoded here, once, and nowhere else.

Hashes are stored as flat strings (readable with redis-cli); a record is parsed leniently, so a
field that is missing or damaged reads as absent rather than failing the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from hypernode_host.core.jobs import JobState, Status
from hypernode_host.core.slots import GpuInfo, Slot, SlotState

E = TypeVar("E", bound=StrEnum)


def _optional_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int:
    return _optional_int(value) or 0


def _member(kind: type[E], value: str | None) -> E | None:
    try:
        return kind(value) if value is not None else None
    except ValueError:
        return None


def _split(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def _object(text: str) -> dict[str, Any] | None:
    """A stored JSON object; None when it is damaged (records are read leniently)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# Jobs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """A job's hash (keys.JOB): the job as received, where it stands, and once finished its result."""

    id: str
    state: JobState | None  # None: a hash without a state we know (written partly, or by another version)
    queue: str = ""  # "" for a job refused at intake
    refusal: str | None = None  # why it was refused, in one line (its error result says so)
    refusal_reason: str | None = None  # and the result's reason (core/jobs.py Reason)
    received_at: int = 0  # epoch ms
    attempt: int = 0  # claims so far: 1 for the first run
    enqueued: bool = False  # its Dramatiq message was sent
    host: str | None = None  # the worker holding it: host and slot
    slot: int | None = None
    container: str | None = None
    status: Status | None = None  # final status, once finished
    finished_at: int | None = None  # epoch ms the result was stored
    entry: str | None = None  # its result's entry in the outbox
    job_json: str = ""  # the job exactly as received
    result_json: str | None = None  # the result exactly as stored (and sent)
    pending_json: str | None = None  # a result kept while its container is removed, not yet in the outbox
    rejection: str | None = None  # the backend's text when it refused the result (state rejected)
    rejected_at: int | None = None  # epoch ms of that refusal
    progress_json: str | None = None  # the latest HN-PROGRESS marker of a running job (core/progress.py)
    settled_at: int | None = None  # epoch ms the backend acknowledged or rejected its result
    compacted_at: int | None = None  # epoch ms it shrank to a tombstone (retention); None: the full record
    result_sha256: str | None = None  # a tombstone's digest of the result it had

    @classmethod
    def parse(cls, job_id: str, fields: Mapping[str, str]) -> JobRecord:
        return cls(
            id=job_id,
            state=_member(JobState, fields.get("state")),
            queue=fields.get("queue", ""),
            refusal=fields.get("refusal"),
            refusal_reason=fields.get("refusal_reason"),
            received_at=_int(fields.get("received_at")),
            attempt=_int(fields.get("attempt")),
            enqueued="enqueued" in fields,
            host=fields.get("host"),
            slot=_optional_int(fields.get("slot")),
            container=fields.get("container"),
            status=_member(Status, fields.get("status")),
            finished_at=_optional_int(fields.get("finished_at")),
            entry=fields.get("entry"),
            job_json=fields.get("job", ""),
            result_json=fields.get("result"),
            pending_json=fields.get("pending_result"),
            rejection=fields.get("rejection"),
            rejected_at=_optional_int(fields.get("rejected_at")),
            progress_json=fields.get("progress"),
            settled_at=_optional_int(fields.get("settled_at")),
            compacted_at=_optional_int(fields.get("compacted_at")),
            result_sha256=fields.get("result_sha256"),
        )

    @property
    def done(self) -> bool:
        """Finished here: its result is stored (in the outbox, or settled by the backend already)."""
        return self.state in (JobState.FINISHED, JobState.REPORTED, JobState.REJECTED)

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    def job(self) -> dict[str, Any]:
        """The job as received; ValueError when the stored copy is damaged."""
        value = json.loads(self.job_json)
        if not isinstance(value, dict):
            raise ValueError(f"job {self.id}: the stored job is not an object")
        return value

    def received_job(self) -> dict[str, Any]:
        """The job as received, for a result's jobDigest; just its id when the stored copy is damaged."""
        try:
            return self.job()
        except ValueError:
            return {"id": self.id}

    def pending(self) -> dict[str, Any] | None:
        """The result a worker kept before removing the container; None when there is none (or it is damaged:
        then the job is claimed and finished again rather than publishing half a result)."""
        kept = _object(self.pending_json) if self.pending_json is not None else None
        return kept if kept is not None and isinstance(kept.get("status"), str) else None

    def result(self) -> dict[str, Any]:
        """The stored result's fields ({} before there is one)."""
        if not self.result_json:
            return {}
        return _object(self.result_json) or {}


@dataclass(frozen=True)
class OutboxEntry:
    """A result in the reply stream (keys.REPLY_STREAM), waiting for the backend's ack."""

    entry_id: str
    job_id: str
    result: dict[str, Any]


# The node --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRecord:
    """The node's hash (keys.NODE): what the bridge writes about its connection to the backend."""

    node_id: str | None = None
    registered_at: int | None = None  # epoch ms of the last `registered`
    heartbeat_at: int | None = None  # epoch ms of the last heartbeat sent
    reconnects: int = 0
    frames_refused: int = 0
    results_rejected: int = 0  # results the backend answered with an error
    refused: str | None = None  # the backend's text while it refuses the token (the bridge waits for a new one)
    refused_at: int | None = None

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> NodeRecord:
        return cls(
            node_id=fields.get("node_id") or None,
            registered_at=_optional_int(fields.get("registered_at")),
            heartbeat_at=_optional_int(fields.get("heartbeat_at")),
            reconnects=_int(fields.get("reconnects")),
            frames_refused=_int(fields.get("frames_refused")),
            results_rejected=_int(fields.get("results_rejected")),
            refused=fields.get("refused") or None,
            refused_at=_optional_int(fields.get("refused_at")),
        )


@dataclass(frozen=True)
class DurationStats:
    """The duration histogram of the jobs that ended with one status, as Prometheus writes it."""

    buckets: list[tuple[str, int]]  # (upper bound in s, cumulative count), ascending, the last is "+Inf"
    sum_s: float
    count: int


# Workers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A live worker's registration (keys.WORKER): what its slot is, whether it takes jobs, what it runs.

    The bridge's admission and heartbeat, ``check``, ``workers`` and the simulated GPUs' load all read it.
    """

    host: str
    slot: Slot
    owner: str = ""  # the owner id of its GPU leases (state/holders.py)
    pid: int = 0
    pidns: str = ""  # the pid namespace ``pid`` belongs to (state/holders.py)
    healthy: bool = True  # its GPUs are fine (false: state unhealthy)
    health: str = "ok"  # why it takes no jobs, in one line
    state: SlotState = SlotState.SERVING  # whether it takes jobs, and if not the kind of why
    job: str = ""  # the job running on the slot now ("" when idle)
    job_gpus: tuple[str, ...] = ()  # the UUIDs that job was given
    job_gpu_memory_mb: int | None = None
    docker: str = ""  # the version of the Docker engine the worker reached at its last check; "": none answered
    seen_at: int | None = None  # epoch ms of its last write (set by state/registry.py, not by the worker)

    def __post_init__(self) -> None:
        if not self.healthy and self.state is SlotState.SERVING:  # written as healthy=False alone
            object.__setattr__(self, "state", SlotState.UNHEALTHY)

    @property
    def serving(self) -> bool:
        """It takes jobs now."""
        return self.state is SlotState.SERVING

    def fields(self) -> dict[str, str | int]:
        """The hash as stored (flat strings, readable with redis-cli)."""
        gpus = self.slot.gpus
        return {
            "host": self.host,
            "slot": self.slot.id,
            "owner": self.owner,
            "pid": self.pid,
            "pidns": self.pidns,
            "queue": self.slot.queue,
            "queues": ",".join(self.slot.queues),
            "gpus": ",".join(g.uuid for g in gpus),
            "gpu_indexes": ",".join(str(g.index) for g in gpus),
            "gpu_names": ",".join(g.name for g in gpus),
            "gpu_memory_mb": ",".join(str(g.memory_total_mb) for g in gpus),
            "healthy": int(self.healthy),
            "health": self.health,
            "state": self.state.value,
            "job": self.job,
            "job_gpus": ",".join(self.job_gpus),
            "job_gpu_memory_mb": "" if self.job_gpu_memory_mb is None else self.job_gpu_memory_mb,
            "docker": self.docker,
        }

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> Registration | None:
        """A registration read back; None for a hash that is not one (expired mid-read, foreign)."""
        try:
            uuids, names = _split(fields["gpus"]), _split(fields["gpu_names"])
            memory, indexes = _split(fields["gpu_memory_mb"]), _split(fields["gpu_indexes"])
            gpus = tuple(
                GpuInfo(index=int(i), uuid=u, name=n, memory_total_mb=int(m), memory_free_mb=int(m))
                for u, n, m, i in zip(uuids, names, memory, indexes, strict=True)
            )
            healthy = fields.get("healthy", "1") == "1"
            # A registration without a state (an older worker's) says only healthy or not.
            state = _member(SlotState, fields.get("state")) or (SlotState.SERVING if healthy else SlotState.UNHEALTHY)
            return cls(
                host=fields["host"],
                slot=Slot(id=int(fields["slot"]), gpus=gpus),
                owner=fields.get("owner", ""),
                pid=int(fields.get("pid") or 0),
                pidns=fields.get("pidns", ""),
                healthy=healthy,
                health=fields.get("health", "ok"),
                state=state,
                job=fields.get("job", ""),
                job_gpus=tuple(_split(fields.get("job_gpus", ""))),
                job_gpu_memory_mb=_optional_int(fields.get("job_gpu_memory_mb")),
                docker=fields.get("docker", ""),
                seen_at=_optional_int(fields.get("seen_at")),
            )
        except (KeyError, ValueError):
            return None
