"""One frozen, validated settings object, built from a mapping (normally ``os.environ``).

Every setting has an ``HN_*`` name; the CLI turns each of its options into the same
name, so the environment and the command line are one source with one validator.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Mapping
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


class Settings(BaseModel):
    """Everything the bridge, the workers and the CLI read from their environment."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    node_token: SecretStr | None = Field(None, alias="HN_NODE_TOKEN")
    endpoint: str = Field("wss://nodes.hypernodesolana.org", alias="HN_ENDPOINT")
    heartbeat_interval: PositiveFloat = Field(10.0, alias="HN_HEARTBEAT_INTERVAL")
    job_timeout: int = Field(300, alias="HN_JOB_TIMEOUT", gt=0)
    max_log_size: int = Field(10_000, alias="HN_MAX_LOG_SIZE", ge=256)
    reconnect_delay: PositiveFloat = Field(5.0, alias="HN_RECONNECT_DELAY")
    reconnect_max_delay: PositiveFloat = Field(60.0, alias="HN_RECONNECT_MAX_DELAY")
    # None: the node's own Redis, which `up` runs; state.connect finds its URL when it connects.
    redis_url: str | None = Field(None, alias="HN_REDIS_URL")
    state_dir: Path = Field(default_factory=_default_state_dir, alias="HN_STATE_DIR")
    job_image: str = Field("python:3.11-slim", alias="HN_JOB_IMAGE", min_length=1)
    gpu_job_image: str | None = Field(None, alias="HN_GPU_JOB_IMAGE")
    allowed_images: tuple[str, ...] = Field((), alias="HN_ALLOWED_IMAGES")
    simulate_gpus: str | None = Field(None, alias="HN_SIMULATE_GPUS")
    cpu_slots: int = Field(1, alias="HN_CPU_SLOTS", ge=0, le=256)
    key_file: Path = Field(default_factory=_default_key_file, alias="HN_KEY_FILE")
    gpus_per_worker: int = Field(1, alias="HN_GPUS_PER_WORKER", ge=1, le=64)
    pip_index_url: str | None = Field(None, alias="HN_PIP_INDEX_URL")
    pip_find_links: str | None = Field(None, alias="HN_PIP_FIND_LINKS")
    pull_timeout: int = Field(600, alias="HN_PULL_TIMEOUT", gt=0)
    metrics_port: int = Field(0, alias="HN_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", alias="HN_METRICS_HOST")
    log_format: str = Field("text", alias="HN_LOG_FORMAT", pattern="^(text|json)$")
    node_name: str = Field(default_factory=socket.gethostname, alias="HN_NODE_NAME", min_length=1)
    log_level: str = Field("INFO", alias="HN_LOG_LEVEL")

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

    @field_validator("allowed_images", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("redis_url", "simulate_gpus", "gpu_job_image", "pip_index_url", "pip_find_links", mode="before")
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
        """The node token; ConfigError when it is not set (only the bridge needs it)."""
        if self.node_token is None or not self.node_token.get_secret_value().strip():
            raise ConfigError("HN_NODE_TOKEN is required (the node token from the Hypernode dashboard)")
        return self.node_token.get_secret_value().strip()

    @property
    def own_redis(self) -> bool:
        """HN_REDIS_URL is not set: the node runs its own Redis (`up` starts it)."""
        return self.redis_url is None

    def gpu_image(self) -> str:
        return self.gpu_job_image or self.job_image

    def image_patterns(self) -> tuple[str, ...]:
        """Images a job may name: the configured defaults plus HN_ALLOWED_IMAGES patterns."""
        return (self.job_image, self.gpu_image(), *self.allowed_images)


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"]) or "settings"
        value = error.get("input")
        shown = "" if name == "HN_NODE_TOKEN" or isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{name}: {error['msg']}{shown}")
    return "; ".join(parts)
