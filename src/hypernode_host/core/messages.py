"""The wire protocol: JSON text frames, one object each, ``type`` discriminates.

Pure: ``decode_backend`` turns a frame into a typed message or raises ProtocolError with one line
naming the problem (never any other exception); ``encode`` turns a message into a frame. No socket,
no clock.

Strictness, per type. Every frame is bounded before it is parsed (size) and after (nesting depth and
number of values); NaN, Infinity, a number too large to be finite (``1e999``), a lone surrogate in any
string or key (valid JSON, but no UTF-8 encoder takes it: it could be neither hashed nor stored nor
shown), duplicate keys and binary frames are refused, so every value after the codec can be encoded;
an unknown ``type`` is refused; each known field is typed and bounded, and a missing required field is refused by name.
Unknown *fields* are ignored on every control message (``registered``, ``ack``, ``job_cancel``,
``ping``, ``error``): upstream's backend already adds fields such as ``message``, and refusing an
``ack`` or a ``registered`` for an extra field would strand a result or a registration. On ``job``
they are kept: a job's fields are validated as a whole by ``JobSpec`` (a bad job gets an error
*result*, which the backend can match to its id) and the job exactly as received fixes ``jobDigest``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

from hypernode_host.core.jobs import JobId, JobState
from hypernode_host.errors import ProtocolError

MAX_FRAME_BYTES = 2 << 20  # the session's cap: the largest legitimate frame is a job with its script
# The WebSocket layer's ceiling (max_size), far above the session's cap: a frame between the two is read
# and refused with one error reply, the connection kept; only one past this closes it (1009).
MAX_WIRE_BYTES = 64 << 20
MAX_DEPTH = 32
# A legitimate job has a few hundred values at most (256 argv items, 64 env entries, 16 datasets).
MAX_VALUES = 10_000
QUOTE_CHARS = 40  # how much of a peer-supplied name an error text quotes
ShortStr = Annotated[str, Field(max_length=1024)]
NodeId = Annotated[str, Field(min_length=1, max_length=128)]
_SURROGATE = re.compile("[\ud800-\udfff]")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Capability(enum.StrEnum):
    """(ext) What a backend announces in ``registered.capabilities``; a backend that announces nothing
    (upstream's) gets no extension frame and is taken to answer every frame, in order, without ids."""

    RESULT_IDS = "result_ids"  # each ack or error that answers a job_result carries the job's id
    DEDUPE = "dedupe"  # a result that comes again for a job is credited once: copies are safe to send
    JOB_STATUS = "job_status"  # it takes job_status frames
    ERRORS = "errors"  # it takes the node's error frames (about frames the node refused)


_CAPABILITY_NAMES = frozenset(c.value for c in Capability)

# Backend → agent ------------------------------------------------------------------------------


class Registered(Message):
    type: Literal["registered"] = "registered"
    nodeId: NodeId
    message: ShortStr | None = None
    # (ext) Names this version does not know are ignored: a newer backend may announce more.
    capabilities: Annotated[list[ShortStr], Field(max_length=64)] = []

    def announced(self) -> frozenset[Capability]:
        return frozenset(Capability(name) for name in self.capabilities if name in _CAPABILITY_NAMES)


class Ack(Message):
    """A heartbeat's or a result's acknowledgement; ``id`` (ext) names the result's job."""

    type: Literal["ack"] = "ack"
    id: ShortStr | None = None
    message: ShortStr | None = None
    # (ext) what the backend credits the node for the result it acknowledges, when it says (the ledger keeps it)
    credit: float | None = Field(None, allow_inf_nan=False)


class JobFrame(Message):
    """A job: its fields sit next to ``type``; they are validated as a JobSpec by the bridge."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: Literal["job"] = "job"

    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class JobCancel(Message):
    type: Literal["job_cancel"] = "job_cancel"
    jobId: JobId  # a job id, matched whole: anything else could be no job of ours (and could forge log lines)


class Ping(Message):
    type: Literal["ping"] = "ping"


class ErrorMessage(Message):
    """An error, either way: the backend's (upstream's texts) or ours about a frame we refused.

    ``id`` (ext): the job whose job_result the backend refuses (from a backend with result_ids).
    """

    type: Literal["error"] = "error"
    message: Annotated[str, Field(max_length=4096)] = ""
    id: ShortStr | None = None

    @model_serializer(mode="wrap")
    def _no_empty_id(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        frame: dict[str, Any] = handler(self)
        if frame.get("id") is None:  # the node's own error frames name no job
            frame.pop("id", None)
        return frame


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
    # (ext) health and sensors; None where the GPU does not report them
    temperature_c: int | None = None
    power_w: float | None = None
    healthy: bool = True
    health: str = "ok"
    # (ext) the driver and the newest CUDA it supports, so a backend can route images by CUDA version
    driver_version: str | None = None
    cuda_version: str | None = None


class HostInfo(Message):
    hostname: str
    os: str
    os_version: str
    arch: str
    gpus: list[GpuEntry]
    docker_version: str
    agent_version: str
    driver_version: str | None = None  # (ext) the GPU driver and its CUDA version; None without GPUs
    cuda_version: str | None = None


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
    unhealthy_slots: list[str] = []  # (ext) one line per slot that takes no jobs for a fault, and why
    busy_slots: list[str] = []  # (ext) one line per slot whose GPU runs processes the node did not start
    driver_version: str | None = None  # (ext) the GPU driver now, and the newest CUDA it supports
    cuda_version: str | None = None
    # (ext) the share of the last 24 h, 7 and 30 days the node was registered (None: not observed yet)
    uptime_24h: float | None = None
    uptime_7d: float | None = None
    uptime_30d: float | None = None


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
    reason: str | None = None  # (ext) core/jobs.py Reason: why a job that did not complete ended so
    # (ext) core/receipts.py: what produced the result, and a hash and signature over all of it.
    receipt: dict[str, Any] | None = None
    artifacts: list[dict[str, Any]] | None = None  # (ext) core/artifacts.py: [{path, size, sha256}] under /out
    artifactsRoot: str | None = None  # (ext) their Merkle root (also in the receipt)
    receiptHash: str | None = None
    receiptSignature: str | None = None
    gpuFault: str | None = None  # (ext) with reason gpu_lost: what the GPU reported, and the workload's quarantine


class Pong(Message):
    type: Literal["pong"] = "pong"


class JobStatusReport(Message):
    """(ext) The state of a job the backend sent again while it is still queued or running here."""

    type: Literal["job_status"] = "job_status"
    id: JobId
    nodeId: str | None
    state: JobState


AgentMessage = Annotated[
    Register | Heartbeat | JobResult | Pong | JobStatusReport | ErrorMessage, Field(discriminator="type")
]

_backend_adapter: TypeAdapter[Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage] = TypeAdapter(
    BackendMessage
)
_agent_adapter: TypeAdapter[Register | Heartbeat | JobResult | Pong | JobStatusReport | ErrorMessage] = TypeAdapter(
    AgentMessage
)


def plain(text: object, limit: int = QUOTE_CHARS) -> str:
    """A peer-supplied name for an error text: cut to ``limit`` characters, printable ASCII only.

    Error texts go into log lines and back on the wire; escaping keeps a lone surrogate, a newline or
    a control character in a hostile key from breaking (or forging lines in) either.
    """
    return str(text)[:limit].encode("unicode_escape").decode("ascii")


def quote(text: object, limit: int = QUOTE_CHARS) -> str:
    return f"'{plain(text, limit)}'"


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which no canonical JSON can write
        raise ProtocolError(f"number {plain(text, 20)} is not finite")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError(f"duplicate field {quote(key)}")
        result[key] = value
    return result


def _check_shape(value: Any) -> None:
    """Nesting depth, value count and lone surrogates, iteratively, so hostile nesting cannot exhaust the stack."""
    stack, seen = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        seen += 1
        if level > MAX_DEPTH:
            raise ProtocolError(f"JSON nested too deeply (more than {MAX_DEPTH} levels)")
        if seen > MAX_VALUES:
            raise ProtocolError(f"JSON has too many values (more than {MAX_VALUES})")
        if isinstance(item, dict):
            for key in item:
                _no_surrogate(key)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        elif isinstance(item, str):
            _no_surrogate(item)


def _no_surrogate(text: str) -> None:
    if (found := _SURROGATE.search(text)) is not None:
        raise ProtocolError(f"a string holds a lone surrogate ({plain(found.group())}), which is not Unicode text")


def load_object(frame: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """A frame to a JSON object with a string ``type``; ProtocolError for anything else."""
    if not isinstance(frame, str):
        raise ProtocolError("binary frames are not accepted; send JSON text")
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame too large ({len(frame)} > {max_bytes} characters)")
    try:
        value = json.loads(
            frame, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_finite
        )
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError(f"JSON nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # JSONDecodeError, and ints past sys.get_int_max_str_digits()
        raise ProtocolError(f"Invalid message format: not JSON ({plain(exc.args[0], 80)})") from None
    if not isinstance(value, dict):
        raise ProtocolError("Invalid message format: expected a JSON object")
    _check_shape(value)
    if not isinstance(value.get("type"), str):
        raise ProtocolError("message has no 'type'")
    return value


def _validate(adapter: TypeAdapter[Any], value: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        if error["type"] == "union_tag_invalid":
            raise ProtocolError(f"Unknown message type {quote(value['type'])}") from None
        where = ".".join(plain(part, 30) for part in error["loc"][1:4]) or "message"
        raise ProtocolError(f"bad {plain(value['type'], 20)} message: {where}: {error['msg']}") from None


def validate_backend(value: dict[str, Any]) -> Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage:
    """A loaded object as the backend message its ``type`` names; ProtocolError naming the problem."""
    result: Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage = _validate(_backend_adapter, value)
    return result


def decode_backend(frame: str | bytes) -> Registered | Ack | JobFrame | JobCancel | Ping | ErrorMessage:
    """Parse a frame the backend sent to the agent."""
    return validate_backend(load_object(frame))


def decode_agent(value: dict[str, Any]) -> Register | Heartbeat | JobResult | Pong | JobStatusReport | ErrorMessage:
    """Validate an object an agent sent to the backend (used by the reference backend)."""
    result: Register | Heartbeat | JobResult | Pong | JobStatusReport | ErrorMessage = _validate(_agent_adapter, value)
    return result


def encode(message: Message) -> str:
    """A message as a JSON text frame (a job's extra fields included)."""
    return json.dumps(message.model_dump(mode="json"), separators=(",", ":"))


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
