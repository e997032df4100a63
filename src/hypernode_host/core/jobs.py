"""The job as the backend sends it, validated; and the states a job goes through here."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from hypernode_host.errors import JobRejected
from hypernode_host.escapes import shown

# Job limits that are not settings: they bound what a hostile backend can make us hold.
MAX_JOB_ID_LEN = 64
MAX_SCRIPT_BYTES = 1 << 20  # 1 MiB of Python source is plenty; bigger payloads belong in datasets
MAX_COMMAND_BYTES = 64 << 10
MAX_ENV_ENTRIES = 64
MAX_ENV_VALUE_BYTES = 16 << 10
MAX_REQUIREMENTS = 64
MAX_REQUIREMENT_CHARS = 256
DEFAULT_MEMORY = "8g"
DEFAULT_CPUS = 2.0
# The smallest CPU limit a job may ask for: Docker reads nano_cpus=0 as "no limit", so a tiny request
# (1e-10) must never round down to it.
MIN_CPUS = 0.01

# Matched whole (fullmatch): ``$`` alone also matches before a trailing newline.
JOB_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_INLINE_COMMENT = re.compile(r"\s+#.*$")

# pydantic's regex engine: ``$`` is the end of the text, never before a newline.
JobId = Annotated[str, StringConstraints(pattern=f"^{JOB_ID_RE.pattern}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE_BYTES)]


class Status(enum.StrEnum):
    """Final status of a job, as sent in ``job_result.status``."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    ERROR = "error"


class Reason(enum.StrEnum):
    """Why a job did not complete: ``job_result.reason`` (ext), sent with every status but completed.

    One vocabulary for the backend, ``jobs``, metrics and the operator; the one-line detail is the
    result's ``logs`` (for ``error``) or the job's own output.
    """

    INVALID_JOB = "invalid_job"  # its fields are malformed, out of bounds or cannot be represented
    IMAGE_NOT_ALLOWED = "image_not_allowed"  # it names an image outside the node's allow-list
    UNSUPPORTED = "unsupported"  # it asks for something this node does not offer (requirements, datasets)
    NO_CAPACITY = "no_capacity"  # no slot of this node can ever run it (GPUs, GPU memory, CPUs, memory)
    IMAGE_PULL_FAILED = "image_pull_failed"  # its image is missing and could not be pulled
    IMAGE_PULL_TIMEOUT = "image_pull_timeout"  # the pull took longer than HN_PULL_TIMEOUT
    REQUIREMENTS_FAILED = "requirements_failed"  # its requirements could not be installed
    EXIT_CODE = "exit_code"  # it exited with a non-zero code (status failed)
    OOM = "oom"  # the kernel killed it for exceeding its memory limit
    TIMEOUT = "timeout"  # it outlived its time limit
    CANCELLED = "cancelled"  # the backend or the operator cancelled it
    GPU_LOST = "gpu_lost"  # its GPU failed while it ran (a critical Xid, or it fell off the bus)
    CUDA_INCOMPATIBLE = "cuda_incompatible"  # its image needs a newer CUDA than this GPU's driver supports
    DISK_FULL = "disk_full"  # the Docker data root is below HN_DISK_FLOOR and nothing is left to collect
    QUARANTINED = "quarantined"  # the same workload made a GPU of this node fail a short while ago
    ENGINE_ERROR = "engine_error"  # the Docker engine failed to run it (not the job's own failure)
    ENGINE_RESTARTED = "engine_restarted"  # the Docker engine restarted while it ran
    NODE_SHUTDOWN = "node_shutdown"  # the node stopped before it could run
    NODE_STORAGE_FULL = "node_storage_full"  # the node's Redis refused to store it (out of memory, disk full)
    OUTPUT_TOO_LARGE = "output_too_large"  # it wrote more output files than the node keeps
    OPERATOR_DROPPED = "operator_dropped"  # the node's operator dropped it (dead letters purged)
    INTERNAL = "internal"  # a fault of the agent itself; its log says more


def reason_of(value: str) -> Reason:
    """``value`` as a Reason; INTERNAL for one this version does not know (an error's ``reason``)."""
    try:
        return Reason(value)
    except ValueError:
        return Reason.INTERNAL


def default_reason(status: Status, oom_killed: bool = False) -> Reason | None:
    """The reason a result with ``status`` carries when nothing more specific is known."""
    if status is Status.COMPLETED:
        return None
    if oom_killed:
        return Reason.OOM
    return {
        Status.FAILED: Reason.EXIT_CODE,
        Status.TIMEOUT: Reason.TIMEOUT,
        Status.CANCELLED: Reason.CANCELLED,
    }.get(status, Reason.INTERNAL)


class JobState(enum.StrEnum):
    """Where a job is on this node; kept in its Redis record."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"  # result stored in the outbox, waiting for the backend's ack
    REPORTED = "reported"  # the backend acknowledged the result
    REJECTED = "rejected"  # the backend refused the result (its text is kept); it is not sent again


def parse_size(text: str) -> int:
    """Docker-style size ("512m", "8g", "1048576") to bytes."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with b, k, m or g)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_requirements(text: str) -> tuple[str, ...]:
    """One PEP 508 requirement per line, normalized (canonical names, sorted, no duplicates).

    Blank lines and comments are allowed, as in a requirements file; pip options, URLs and
    paths are not (they would let a job choose where code comes from): ValueError naming the line.
    """
    found: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _INLINE_COMMENT.sub("", raw).strip()
        if line and not line.startswith("#"):
            found.add(_requirement(number, line))
    if len(found) > MAX_REQUIREMENTS:
        raise ValueError(f"{len(found)} requirements, at most {MAX_REQUIREMENTS} per job")
    return tuple(sorted(found))


def _requirement(number: int, line: str) -> str:
    if len(line) > MAX_REQUIREMENT_CHARS:
        raise ValueError(f"line {number} is longer than {MAX_REQUIREMENT_CHARS} characters")
    if line.startswith("-"):
        raise ValueError(f"line {number}: pip options are not allowed, only requirements such as 'numpy>=1.26'")
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        raise ValueError(f"line {number} is not a PEP 508 requirement: {line[:60]!r}") from None
    if requirement.url:
        raise ValueError(f"line {number}: URLs and paths are not allowed, only names and versions")
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{canonicalize_name(requirement.name)}{extras}{requirement.specifier}{marker}"


class JobSpec(BaseModel):
    """A job, validated. Field names follow the wire (upstream's camelCase)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: JobId
    script: Annotated[str, StringConstraints(max_length=MAX_SCRIPT_BYTES)] | None = None
    command: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND_BYTES)]
        | Annotated[
            list[Annotated[str, StringConstraints(max_length=MAX_COMMAND_BYTES)]],
            Field(min_length=1, max_length=256),
        ]
        | None
    ) = None
    requirements: Annotated[str, StringConstraints(max_length=64 << 10)] = ""
    image: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    gpuRequired: bool = False
    gpuCount: int = Field(0, ge=0, le=64)
    gpuMemoryMb: int | None = Field(None, ge=0)
    memoryLimit: Annotated[str, StringConstraints(max_length=32)] = DEFAULT_MEMORY
    cpuLimit: float = Field(DEFAULT_CPUS, ge=MIN_CPUS, le=1024, allow_inf_nan=False)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    estimatedTime: float | None = Field(None, ge=0, allow_inf_nan=False)
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV_ENTRIES)] = {}
    datasets: Annotated[list[Annotated[str, StringConstraints(max_length=2048)]], Field(max_length=16)] = []

    @model_validator(mode="before")
    @classmethod
    def _job_id_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" not in data and "jobId" in data:
            data = {**data, "id": data["jobId"]}
        return data

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str) -> str:
        parse_requirements(value)
        return value

    @field_validator("memoryLimit")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if (self.script is None) == (self.command is None):
            raise ValueError("a job needs exactly one of 'script' or 'command'")
        if any(name.upper().startswith(("NVIDIA_", "HN_")) for name in self.env):
            raise ValueError("env may not set NVIDIA_* or HN_* variables")
        return self

    @property
    def gpus(self) -> int:
        """How many GPUs the job needs (asking for GPU memory means asking for a GPU)."""
        return max(self.gpuCount, 1 if self.gpuRequired or self.gpuMemoryMb else 0)

    @property
    def requirement_list(self) -> tuple[str, ...]:
        """The requirements, normalized: what the cache is keyed on and pip is given."""
        return parse_requirements(self.requirements)

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memoryLimit)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> JobSpec:
        """Validate a job's fields; JobRejected with a one-line reason when they are bad."""
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise JobRejected(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line, without echoing large inputs."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        # A location can be a job's own key (an env name): escaped, it cannot forge a log line.
        where = ".".join(shown(p, 40) for p in error["loc"]) or "job"
        parts.append(f"{where}: {shown(error['msg'].removeprefix('Value error, '), 200)}")
    return "invalid job: " + "; ".join(parts)


def job_id_of(raw: Mapping[str, Any]) -> str | None:
    """The job id if the frame carries a valid one (to address an error result), else None."""
    value = raw.get("id", raw.get("jobId"))
    return value if isinstance(value, str) and JOB_ID_RE.fullmatch(value) else None
