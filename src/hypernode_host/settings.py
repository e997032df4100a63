"""One frozen, validated settings object, built from a mapping (normally ``os.environ``).

A field with an ``HN_*`` alias is a setting, and its ``Field`` is its only definition: the CLI
derives a global option from each (named after the field, or by its ``Flag``; typed, with the
description as its help) and writes what it is given into that variable, so the environment and
the command line are one source with one validator.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from hypernode_host.errors import ConfigError


def _default_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/hypernode-host``, else ``$HOME/.local/state/hypernode-host`` (of ``environ``)."""
    home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(environ.get("XDG_STATE_HOME") or Path(home) / ".local" / "state") / "hypernode-host"


def _default_key_file() -> Path:
    return _default_state_dir() / "node.key"


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class Flag:
    """A setting's command-line option where it is not named after the field (``--token``)."""

    name: str


class Settings(BaseModel):
    """Everything the bridge, the workers and the CLI read from their environment."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    node_token: Annotated[SecretStr | None, Flag("--token")] = Field(
        None, alias="HN_NODE_TOKEN", description="Node token from the Hypernode dashboard; never logged."
    )
    node_token_file: Annotated[Path | None, Flag("--token-file")] = Field(
        None,
        alias="HN_NODE_TOKEN_FILE",
        description="File holding the node token (wins over HN_NODE_TOKEN): read at every registration, "
        "watched for a new token after a refusal.",
    )
    endpoint: str = Field(
        "wss://nodes.hypernodesolana.org", alias="HN_ENDPOINT", description="Backend WebSocket URL (ws:// or wss://)."
    )
    heartbeat_interval: PositiveFloat = Field(
        10.0, alias="HN_HEARTBEAT_INTERVAL", description="Seconds between heartbeats."
    )
    job_timeout: int = Field(
        300, alias="HN_JOB_TIMEOUT", gt=0, description="Longest any job may run, s (caps a job's own timeout)."
    )
    job_retention: int = Field(
        604_800,
        alias="HN_JOB_RETENTION",
        gt=0,
        description="How long a settled job keeps its full record, s; then it shrinks to a tombstone.",
    )
    tombstone_retention: int = Field(
        2_592_000,
        alias="HN_TOMBSTONE_RETENTION",
        gt=0,
        description="How long a tombstone stops the job id running again, s; then the id is forgotten.",
    )
    max_log_size: int = Field(
        10_000, alias="HN_MAX_LOG_SIZE", ge=256, description="Characters of logs sent per job (head and tail)."
    )
    max_output_bytes: int = Field(
        0,
        alias="HN_MAX_OUTPUT_BYTES",
        ge=0,
        le=1 << 30,
        description="Bytes of output files a job may leave under /out (a tmpfs inside its memory), 0 = no /out.",
    )
    reconnect_delay: PositiveFloat = Field(
        5.0, alias="HN_RECONNECT_DELAY", description="First reconnect delay, s (doubles per failure, with jitter)."
    )
    reconnect_max_delay: PositiveFloat = Field(
        60.0, alias="HN_RECONNECT_MAX_DELAY", description="Cap on the reconnect delay, s."
    )
    # None: the node's own Redis, which `up` runs; state.connect finds its URL when it connects.
    redis_url: str | None = Field(
        None,
        alias="HN_REDIS_URL",
        description="Redis shared by the bridge and the workers; unset: the node's own, run by `up`.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        alias="HN_STATE_DIR",
        description="Where `up` keeps its own Redis when no Redis URL is given.",
    )
    job_image: str = Field(
        "python:3.11-slim", alias="HN_JOB_IMAGE", min_length=1, description="Image for jobs that name none."
    )
    gpu_job_image: str | None = Field(
        None, alias="HN_GPU_JOB_IMAGE", description="Image for GPU jobs that name none (unset: the job image)."
    )
    allowed_images: tuple[str, ...] = Field(
        (),
        alias="HN_ALLOWED_IMAGES",
        description="Extra images jobs may name: comma-separated fnmatch patterns (name@sha256:... pins one).",
    )
    simulate_gpus: str | None = Field(
        None,
        alias="HN_SIMULATE_GPUS",
        description="Simulated GPUs: 4, 2xRTX4090:24576 or 1xA100:81920:mig=3g.40gb+3g.40gb (unset: NVML).",
    )
    simulate_driver: str | None = Field(
        None,
        alias="HN_SIMULATE_DRIVER",
        pattern=r"^[0-9]+(\.[0-9]+)*/[0-9]+(\.[0-9]+)*$",
        description="The simulated GPUs' driver at start, VERSION/CUDA: 550.54/12.4 (unset: no CUDA version).",
    )
    poison_quarantine: int = Field(
        3600,
        alias="HN_POISON_QUARANTINE",
        ge=0,
        description="Seconds a workload whose GPU failed under it is refused on this node's other GPUs (0: off).",
    )
    cpu_slots: int = Field(1, alias="HN_CPU_SLOTS", ge=0, le=256, description="CPU-only worker slots.")
    key_file: Path = Field(
        default_factory=_default_key_file,
        alias="HN_KEY_FILE",
        description="The node's Ed25519 key file (created 0600 on first start).",
    )
    gpus_per_worker: int = Field(1, alias="HN_GPUS_PER_WORKER", ge=1, le=64, description="GPUs per worker slot.")
    pip_index_url: str | None = Field(
        None, alias="HN_PIP_INDEX_URL", description="Package index for job requirements (the workers' own pip)."
    )
    pip_find_links: str | None = Field(
        None, alias="HN_PIP_FIND_LINKS", description="Wheel directory the workers read (or URL) for job requirements."
    )
    memory_reserve: int = Field(
        1024,
        alias="HN_MEMORY_RESERVE",
        ge=0,
        description="Memory kept for the node itself (dockerd, Redis, the agent), MiB: a job's memoryLimit "
        "may be at most the host's memory less this.",
    )
    disk_floor: str = Field(
        "5g",
        alias="HN_DISK_FLOOR",
        pattern=r"^\s*\d+(\.\d+)?\s*[bkmgtBKMGT]?\s*$",
        description="Free disk kept on the Docker data root (5g): least recently used images and requirements "
        "volumes are removed to keep it; below it with nothing to remove, jobs are refused (0: off).",
    )
    prepull: tuple[str, ...] = Field(
        (), alias="HN_PREPULL", description="Images pulled at start and never collected: comma-separated."
    )
    pull_timeout: int = Field(600, alias="HN_PULL_TIMEOUT", gt=0, description="Longest an image pull may take, s.")
    metrics_port: int = Field(
        0, alias="HN_METRICS_PORT", ge=0, le=65535, description="Prometheus metrics port, 0 = off."
    )
    metrics_host: str = Field(
        "127.0.0.1", alias="HN_METRICS_HOST", description="Address the metrics endpoint binds to."
    )
    log_format: str = Field(
        "text", alias="HN_LOG_FORMAT", pattern="^(text|json)$", description="text or json (one object per line)."
    )
    node_name: str = Field(
        default_factory=socket.gethostname,
        alias="HN_NODE_NAME",
        min_length=1,
        description="Node name in hostInfo and container labels (default: the host name).",
    )
    log_level: str = Field("INFO", alias="HN_LOG_LEVEL", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    notify_url: tuple[str, ...] = Field(
        (),
        alias="HN_NOTIFY_URL",
        description="Where the node's events are POSTed: one or more http(s) URLs, comma-separated (empty: none).",
    )
    notify_format: str = Field(
        "json",
        alias="HN_NOTIFY_FORMAT",
        pattern="^(json|ntfy|discord|slack)$",
        description="The events' payload: json, ntfy, discord or slack.",
    )
    notify_events: tuple[str, ...] = Field(
        (),
        alias="HN_NOTIFY_EVENTS",
        description="Events sent: comma-separated fnmatch patterns such as job.* (empty: every event).",
    )
    notify_offline_after: PositiveFloat = Field(
        120.0,
        alias="HN_NOTIFY_OFFLINE_AFTER",
        description="Seconds without a registered connection before the node.offline event.",
    )

    @field_validator("endpoint")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _default_when_empty(cls, value: Any) -> Any:
        return _default_state_dir() if value == "" else value

    @field_validator("allowed_images", "prepull", "notify_url", "notify_events", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("notify_url")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
                # Not the URL itself: a webhook URL is a secret (Discord's and Slack's carry their token).
                raise ValueError("each URL must start with http:// or https:// and hold no spaces")
        return value

    @field_validator(
        "redis_url",
        "simulate_gpus",
        "simulate_driver",
        "gpu_job_image",
        "pip_index_url",
        "pip_find_links",
        "node_token_file",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) and nothing else; ConfigError on a bad value."""
        source = os.environ if environ is None else environ
        values: dict[str, Any] = {k: v for k, v in source.items() if k.startswith("HN_")}
        state_home = _default_state_dir(source)  # the defaults too come from ``environ``
        values["HN_STATE_DIR"] = values.get("HN_STATE_DIR") or state_home
        values.setdefault("HN_KEY_FILE", state_home / "node.key")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    def token(self) -> str:
        """The node token: HN_NODE_TOKEN_FILE's content, read now (an operator replaces the file to give a
        new token), else HN_NODE_TOKEN; ConfigError when there is none (only the bridge needs it)."""
        if self.node_token_file is not None:
            return read_token_file(self.node_token_file)
        if self.node_token is None or not self.node_token.get_secret_value().strip():
            raise ConfigError(
                "HN_NODE_TOKEN or HN_NODE_TOKEN_FILE is required (the node token from the Hypernode dashboard)"
            )
        return self.node_token.get_secret_value().strip()

    @property
    def own_redis(self) -> bool:
        """HN_REDIS_URL is not set: the node runs its own Redis (`up` starts it)."""
        return self.redis_url is None

    @property
    def disk_floor_bytes(self) -> int:
        """HN_DISK_FLOOR in bytes (0: off)."""
        text = self.disk_floor.strip().lower()
        unit = text[-1] if text[-1] in "bkmgt" else ""
        return int(float(text.removesuffix(unit).strip()) * (1 << (10 * "bkmgt".index(unit) if unit else 0)))

    def gpu_image(self) -> str:
        return self.gpu_job_image or self.job_image

    def image_patterns(self) -> tuple[str, ...]:
        """Images a job may name: the configured defaults plus HN_ALLOWED_IMAGES patterns."""
        return (self.job_image, self.gpu_image(), *self.allowed_images)


MAX_TOKEN_FILE_BYTES = 4096  # a token is a few dozen characters; anything bigger is the wrong file


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped); ConfigError naming the file, never its content."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"HN_NODE_TOKEN_FILE {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"HN_NODE_TOKEN_FILE {path}: not UTF-8 text") from None
    if len(data) > MAX_TOKEN_FILE_BYTES or not token or any(c.isspace() for c in token):
        raise ConfigError(f"HN_NODE_TOKEN_FILE {path}: must hold one token (one line, no spaces)")
    return token


SECRET_SETTINGS = ("HN_NODE_TOKEN", "HN_NOTIFY_URL")  # a value never shown in an error: webhook URLs carry tokens


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"]) or "settings"
        value = error.get("input")
        shown = "" if name in SECRET_SETTINGS or isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{name}: {error['msg']}{shown}")
    return "; ".join(parts)
