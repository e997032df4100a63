"""The wire protocol (DESIGN.md "Wire protocol"): JSON text frames, one object each, ``type`` discriminates.

Pure: ``decode`` turns a frame into a typed message or raises ProtocolError with one line
naming the problem; ``encode`` turns a message into a frame. No socket, no clock.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hypernode_host import constants as C
from hypernode_host.errors import ProtocolError

MAX_DEPTH = 32
ShortStr = Annotated[str, Field(max_length=1024)]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# Backend → agent ------------------------------------------------------------------------------


class Registered(Message):
    type: Literal["registered"] = "registered"
    nodeId: Annotated[str, Field(min_length=1, max_length=128)]
    message: ShortStr | None = None


class Ack(Message):
    type: Literal["ack"] = "ack"
    id: ShortStr | None = None
    message: ShortStr | None = None


class JobFrame(Message):
    """A job: its fields sit next to ``type``; they are validated as a JobSpec by the session."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: Literal["job"] = "job"

    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class JobCancel(Message):
    type: Literal["job_cancel"] = "job_cancel"
    jobId: Annotated[str, Field(min_length=1, max_length=C.MAX_JOB_ID_LEN)]


class Ping(Message):
    type: Literal["ping"] = "ping"


class ErrorMessage(Message):
    type: Literal["error"] = "error"
    message: Annotated[str, Field(max_length=4096)] = ""


BackendMessage = Annotated[Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage, Field(discriminator="type")]

# Agent → backend ------------------------------------------------------------------------------


class GpuEntry(Message):
    index: int
    uuid: str
    name: str
    model: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_pct: int
    # upstream's keys, as strings with units, for backends that read those
    vram_total: str
    vram_free: str
    utilization: str


class HostInfo(Message):
    hostname: str
    os: str
    os_version: str
    arch: str
    gpus: list[GpuEntry]
    docker_version: str
    agent_version: str


class Register(Message):
    type: Literal["register"] = "register"
    token: str
    hostInfo: HostInfo
    nodeId: str | None = None
    nodePublicKey: str | None = None
    capacity: dict[str, int] | None = None

    def __repr__(self) -> str:  # never let the token reach a log line through repr
        return f"Register(nodeId={self.nodeId!r}, hostname={self.hostInfo.hostname!r})"

    __str__ = __repr__


class HeartbeatStats(Message):
    jobs_completed: int
    jobs_failed: int
    total_uptime: int
    active_jobs: int
    gpus: list[GpuEntry]
    queued_jobs: int = 0
    free_slots: int = 0


class Heartbeat(Message):
    type: Literal["heartbeat"] = "heartbeat"
    nodeId: str | None
    timestamp: str
    stats: HeartbeatStats


class JobResult(Message):
    """A job's result with its proofs (all fields upstream sent, plus our extensions)."""

    type: Literal["job_result"] = "job_result"
    id: str
    nodeId: str | None
    status: Literal["completed", "failed", "timeout", "cancelled", "error"]
    success: bool
    logs: str
    exitCode: int
    executionHash: str
    logsHash: str
    completedAt: int
    startedAt: int
    image: str
    jobDigest: str
    fullLogsHash: str
    logBytes: int
    truncated: bool
    oomKilled: bool
    durationMs: int
    signature: str
    nodePublicKey: str


class Pong(Message):
    type: Literal["pong"] = "pong"


AgentMessage = Annotated[Register | Heartbeat | JobResult | Pong, Field(discriminator="type")]

_backend_adapter: TypeAdapter[Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage] = TypeAdapter(
    BackendMessage
)
_agent_adapter: TypeAdapter[Register | Heartbeat | JobResult | Pong] = TypeAdapter(AgentMessage)


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError(f"duplicate field {key[:40]!r}")
        result[key] = value
    return result


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth, iteratively, so hostile nesting cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load_object(frame: str | bytes, max_bytes: int = C.MAX_FRAME_BYTES) -> dict[str, Any]:
    """A frame to a JSON object with a ``type``; ProtocolError for anything else."""
    if isinstance(frame, bytes):
        raise ProtocolError("binary frames are not accepted; send JSON text")
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame too large ({len(frame)} > {max_bytes} characters)")
    try:
        value = json.loads(frame, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"Invalid message format: not JSON ({exc.args[0][:60]})") from None
    if not isinstance(value, dict):
        raise ProtocolError("Invalid message format: expected a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError("JSON nested too deeply")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no 'type'")
    return value


def _validate(adapter: TypeAdapter[Any], value: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "union_tag_invalid":
            raise ProtocolError(f"Unknown message type {str(value.get('type'))[:40]!r}") from None
        where = ".".join(str(p)[:40] for p in error["loc"][1:4]) or "message"
        raise ProtocolError(f"bad {value.get('type')!s:.40} message: {where}: {error['msg']}") from None


def decode_backend(frame: str | bytes) -> Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage:
    """Parse a frame the backend sent to the agent."""
    result: Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage = _validate(
        _backend_adapter, load_object(frame)
    )
    return result


def decode_agent(value: dict[str, Any]) -> Register | Heartbeat | JobResult | Pong:
    """Validate an object an agent sent to the backend (used by the reference backend)."""
    result: Register | Heartbeat | JobResult | Pong = _validate(_agent_adapter, value)
    return result


def encode(message: Message) -> str:
    """A message as a JSON text frame."""
    return json.dumps(message.model_dump(mode="json", exclude_none=False), separators=(",", ":"))


def gpu_entry(index: int, uuid: str, name: str, total_mb: int, free_mb: int, utilization: int) -> GpuEntry:
    """A GPU as both our numeric keys and upstream's strings with units."""
    return GpuEntry(
        index=index,
        uuid=uuid,
        name=name,
        model=name,
        memory_total_mb=total_mb,
        memory_free_mb=free_mb,
        utilization_pct=utilization,
        vram_total=f"{total_mb} MiB",
        vram_free=f"{free_mb} MiB",
        utilization=f"{utilization}%",
    )
