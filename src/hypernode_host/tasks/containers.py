"""The only module that imports docker: the container contract and a small runtime adapter.

``container_config`` builds every job container's configuration in one place (DESIGN.md
"Container contract", research/reliability.md 1.2); ``DockerRuntime`` maps docker-py and its
errors onto the few operations the runner needs.
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from hypernode_host import constants as C
from hypernode_host.errors import ContainerError, ImageUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """What a job container needs; everything else is fixed by the contract."""

    name: str
    image: str
    command: list[str]
    env: Mapping[str, str]
    labels: Mapping[str, str]
    memory_bytes: int
    nano_cpus: int
    gpu_uuids: tuple[str, ...] = ()
    real_gpus: bool = False  # False with simulated GPUs: assignment shows in env and labels only
    files: Mapping[str, bytes] = field(default_factory=dict)  # name → content, put under /job


@dataclass(frozen=True)
class ContainerState:
    running: bool
    exit_code: int
    oom_killed: bool
    started_at_ms: int
    finished_at_ms: int
    image_id: str


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: the hardened contract, nothing from the job but limits."""
    env = {**spec.env, "HOME": C.WORK_DIR, "PYTHONUNBUFFERED": "1"}
    if spec.gpu_uuids:
        # Override whatever the image declares: the toolkit would honour an image's "all".
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    else:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    config: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": env,
        "user": C.JOB_USER,
        "working_dir": C.WORK_DIR,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"rw,nosuid,nodev,size={C.TMP_SIZE}",
            C.WORK_DIR: f"rw,nosuid,nodev,size={C.WORK_SIZE},uid=65534,gid=65534,mode=0700",
        },
        # The script directory is an anonymous volume so put_archive can fill it before start
        # (the rootfs is read-only and tmpfs is not mounted yet); it is root-owned, so the
        # non-root job can read it but not write to it. Removed with the container.
        "mounts": [Mount(C.SCRIPT_DIR, None, type="volume")],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": C.PIDS_LIMIT,
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,  # equal to mem_limit: no swap
        "nano_cpus": spec.nano_cpus,
        "ulimits": [
            Ulimit(name="nofile", soft=C.NOFILE_LIMIT, hard=C.NOFILE_LIMIT),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "ipc_mode": "private",
        "shm_size": C.SHM_SIZE,
        "init": True,
        "privileged": False,
        "restart_policy": {"Name": "no"},
        "auto_remove": False,
        "log_config": LogConfig(type="json-file", config={"max-size": "50m", "max-file": "2"}),
        "detach": True,
    }
    if spec.gpu_uuids and spec.real_gpus:
        config["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_uuids), capabilities=[["gpu"]])
        ]
    return config


def _tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o444
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ms(stamp: str) -> int:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z') to epoch milliseconds; 0 for 'never'."""
    if not stamp or stamp.startswith("0001-"):
        return 0
    head, _, frac = stamp.rstrip("Z").partition(".")
    frac = frac.split("+")[0].split("-")[0]
    parsed = datetime.fromisoformat(head + "+00:00")
    return int(parsed.timestamp()) * 1000 + int((frac + "000")[:3])


class DockerRuntime:
    """docker-py behind the operations the runner needs; SDK errors become ContainerError."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._local = threading.local()
        self._shared = client

    @property
    def client(self) -> docker.DockerClient:
        # One client per thread: the log follower streams while the runner waits.
        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise ContainerError(f"Docker engine unreachable: {exc}") from None
            self._local.client = client
        return client

    def version(self) -> str:
        try:
            return str(self.client.version().get("Version", "unknown"))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return "unknown"

    def has_image(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot inspect image {image}: {exc.explanation}") from None
        return True

    def ensure_image(self, image: str, pull_timeout_s: float = 600) -> str:
        """The local image ID of ``image``, pulling it when absent."""
        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot inspect image {image}: {exc.explanation}") from None
        log.info("pulling image %s", image)
        try:
            pulled = docker.from_env(timeout=int(pull_timeout_s)).images.pull(image)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageUnavailable(f"image {image} is not available: {str(exc)[:200]}") from None
        return str(pulled.id)

    def find(self, name: str) -> str | None:
        """The id of the container called ``name``, if any."""
        try:
            return str(self.client.containers.get(name).id)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot inspect container {name}: {exc.explanation}") from None

    def create(self, spec: ContainerSpec) -> str:
        """Create the container and put its files in; the name is a lock (409 when taken)."""
        try:
            container = self.client.containers.create(**container_config(spec))
            if spec.files:
                container.put_archive(C.SCRIPT_DIR, _tar(spec.files))
        except docker.errors.ImageNotFound:
            raise ImageUnavailable(f"image {spec.image} is not available") from None
        except docker.errors.APIError as exc:
            raise ContainerError(f"cannot create container: {exc.explanation}") from None
        return str(container.id)

    def start(self, container_id: str) -> None:
        self._call(container_id, "start")

    def wait(self, container_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True when the container has exited."""
        try:
            self.client.api.wait(container_id, timeout=timeout_s)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return False  # still running: docker-py raises requests' errors, not its own
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            raise ContainerError(f"wait failed: {exc.explanation}") from None
        return True

    def logs(self, container_id: str) -> Iterator[bytes]:
        """Follow stdout and stderr from the start until the container exits."""
        try:
            stream = self.client.api.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
            yield from stream
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ContainerError(f"log stream failed: {exc}") from None

    def state(self, container_id: str) -> ContainerState:
        try:
            info = self.client.api.inspect_container(container_id)
        except docker.errors.APIError as exc:
            raise ContainerError(f"inspect failed: {exc.explanation}") from None
        state = info["State"]
        return ContainerState(
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            started_at_ms=_ms(state.get("StartedAt", "")),
            finished_at_ms=_ms(state.get("FinishedAt", "")),
            image_id=str(info.get("Image", "")),
        )

    def stop(self, container_id: str, grace_s: int) -> None:
        self._call(container_id, "stop", timeout=grace_s)

    def kill(self, container_id: str) -> None:
        try:
            self.client.api.kill(container_id)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # already gone or not running
                raise ContainerError(f"kill failed: {exc.explanation}") from None

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise ContainerError(f"remove failed: {exc.explanation}") from None

    def labelled(self, label: str, value: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """(id, labels) of every container, running or not, that carries ``label`` (=value)."""
        selector = label if value is None else f"{label}={value}"
        try:
            found = self.client.api.containers(all=True, filters={"label": selector})
        except docker.errors.APIError as exc:
            raise ContainerError(f"list failed: {exc.explanation}") from None
        return [(str(c["Id"]), dict(c.get("Labels") or {})) for c in found]

    def _call(self, container_id: str, method: str, **kwargs: Any) -> None:
        try:
            getattr(self.client.api, method)(container_id, **kwargs)
        except docker.errors.APIError as exc:
            raise ContainerError(f"{method} failed: {exc.explanation}") from None
