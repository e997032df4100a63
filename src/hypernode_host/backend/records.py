"""What the reference backend remembers, in memory: its nodes, their heartbeats, and the jobs it sent."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from hypernode_host.backend import oracle


class JobPhase(enum.StrEnum):
    """Where a job stands at the backend: pending → dispatched → finished; cancelled / cancel_sent on request."""

    PENDING = "pending"  # no node has it yet
    DISPATCHED = "dispatched"  # sent to a node, no result yet
    FINISHED = "finished"  # its first result is in and graded
    CANCELLED = "cancelled"  # cancelled before any node had it: never sent
    CANCEL_SENT = "cancel_sent"  # cancelled while a node had it: the node was told


@dataclass(frozen=True)
class HeartbeatRecord:
    monotonic: float
    wall_ms: int
    stats: dict[str, Any]


@dataclass
class NodeRecord:
    node_id: str
    host_info: dict[str, Any]
    public_key: str | None
    capacity: dict[str, int] | None
    registered_at_ms: int
    connection: ServerConnection | None = None
    heartbeats: list[HeartbeatRecord] = field(default_factory=list)
    pongs: list[int] = field(default_factory=list)
    registrations: int = 0  # 1 for the first register, +1 for every resume
    errors: list[str] = field(default_factory=list)  # (ext) error frames the node sent us

    def summary(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "hostname": self.host_info.get("hostname"),
            "connected": self.connection is not None,
            "heartbeats": len(self.heartbeats),
            "lastHeartbeatAt": self.heartbeats[-1].wall_ms if self.heartbeats else None,
            "registrations": self.registrations,
        }


@dataclass
class JobRecord:
    job: dict[str, Any]  # the job fields exactly as sent to the node, without "type"
    state: JobPhase = JobPhase.PENDING
    node_id: str | None = None
    dispatched_at_ms: int | None = None
    received_at_ms: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)  # (ext) job_status states the node reported
    dispatches: int = 0  # sends of the job frame: 1, plus one per resume while it had no result
    credits: int = 0  # results credited: the first one only, or (upstream) every one accepted
    verification: oracle.Verification | None = None
    waiters: set[ServerConnection] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    def summary(self) -> dict[str, Any]:
        first = self.results[0] if self.results else {}
        return {
            "id": self.job_id,
            "nodeId": self.node_id,
            "state": self.state,
            "status": first.get("status"),
            "verified": self.verification.verified if self.verification else None,
            "credits": self.credits,
        }

    def result_frame(self) -> dict[str, Any]:
        assert self.verification is not None  # only called once the first result is in
        return {
            "type": "result",
            "id": self.job_id,
            "result": self.results[0],
            "verification": self.verification.to_json(),
        }
