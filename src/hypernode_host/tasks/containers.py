"""The only module that imports docker: the container contract and a small runtime adapter.

``container_config`` builds every job container's configuration in one place (no network, a
read-only root, no capabilities, no new privileges, bounded pids, memory without swap, CPUs, a
non-root user, GPUs by exact UUID), and ``prep_container_config`` the requirements step's, on the
same hardened base; ``DockerRuntime`` maps docker-py onto the few operations the runner, the image
puller and the requirements step need, and ``docker_errors`` turns docker-py's errors into ours, in
one place.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import threading
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.utils
import requests
import requests.exceptions
from docker.types import DeviceRequest, DriverConfig, LogConfig, Mount, Ulimit

from hypernode_host.core.receipts import Sandbox, seccomp_profile
from hypernode_host.errors import ConfigError, ContainerError, EngineUnreachable, ImageUnavailable, NameTaken
from hypernode_host.tasks import seccomp

log = logging.getLogger(__name__)

# The container contract: who the job runs as, where its files are, what it may hold.
JOB_USER = "65534:65534"  # nobody:nogroup, whatever the image says
SCRIPT_DIR = "/job"
SCRIPT_PATH = "/job/script.py"
WORK_DIR = "/work"
PIDS_LIMIT = 1024
SHM_SIZE = 256 << 20  # the largest each scratch tmpfs may get (scratch_bytes)
NOFILE_LIMIT = 4096
ENGINE_PROBE_S = 2.0  # how long a "does the engine answer at all" probe waits
# Labels every job container carries: they are how a restarted worker finds its containers.
LABEL_JOB = "hypernode.job_id"
LABEL_NODE = "hypernode.node"  # the host's HN_NODE_NAME (hosts sharing one Redis number their slots alike)
# The node's identity (state/node.py): a worker touches only containers and volumes that carry its own.
LABEL_NODE_ID = "hypernode.node-id"
LABEL_WORKER = "hypernode.worker"
LABEL_ATTEMPT = "hypernode.attempt"
LABEL_GPUS = "hypernode.gpus"
LABEL_DEADLINE = "hypernode.deadline"  # epoch ms, when its requirements took part of the job's timeout

# The kernel's OOM killer picks a job before the agent, dockerd or anything else on the host.
OOM_SCORE_ADJ = 500
# A job's output reaches the worker through attach; the driver keeps only enough for a worker
# restarted mid-job to re-read (30 MiB, uncompressed: compressing rotated files costs a core).
LOG_CONFIG = LogConfig(type="local", config={"max-size": "10m", "max-file": "3", "compress": "false"})
# Each scratch tmpfs (/tmp, the work dir, /dev/shm) lives in RAM charged to the job's memory
# cgroup: capped at a quarter of the job's memory, so a full disk is ENOSPC and never an OOM kill.
SCRATCH_SHARE = 4
MIB = 1 << 20

# Where a job finds its installed requirements (a cache volume, mounted read-only).
DEPS_DIR = "/opt/hypernode/deps"
DEPS_SITE = DEPS_DIR + "/site"

# The requirements step's container runs the job's image, so it is a job container (container_config)
# with the job's limits, but with the cache volume writable and the downloaded wheels copied in.
PREP_DEPS_DIR = "/deps"
PREP_SITE = PREP_DEPS_DIR + "/site"
PREP_WHEELS_DIR = "/wheels"
LABEL_ROLE = "hypernode.role"
# A job's output files: OUT_DIR, a tmpfs volume of a holder container that outlives the job (tasks/artifacts.py).
OUT_DIR = "/out"
HOLDER_ROLE = "outputs"
HOLDER_MEMORY = 32 << 20
HOLDER_NANO_CPUS = 100_000_000  # it only sleeps
HOLDER_COMMAND = ["sleep", "infinity"]
LABEL_REQUIREMENTS = "hypernode.requirements"


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
    deps_volume: str | None = None  # the requirements cache volume, mounted read-only at DEPS_DIR
    outputs_from: str | None = None  # the holder container whose tmpfs volume is the job's OUT_DIR


@dataclass(frozen=True)
class PrepSpec:
    """The requirements step: the image's pip, from the wheels put in PREP_WHEELS_DIR into ``volume``."""

    name: str
    image: str
    command: list[str]
    labels: Mapping[str, str]
    volume: str
    memory_bytes: int  # the job's
    nano_cpus: int  # the job's
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    running: bool
    exit_code: int
    oom_killed: bool
    started_at_ms: int
    finished_at_ms: int
    image_id: str
    created_at_ms: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    runtime: str = ""  # the OCI runtime the engine ran it with ("runc", "nvidia")
    sandbox: Sandbox | None = None  # the limits and isolation the engine applied, for the receipt


def owned_by(node: str, labels: Mapping[str, str]) -> bool:
    """True when a container's labels name ``node`` (its identity): the only containers a worker touches."""
    return labels.get(LABEL_NODE_ID) == node


def applied_sandbox(info: Mapping[str, Any]) -> Sandbox:
    """The sandbox a container runs in, as the engine reports it (``docker inspect``), not as we asked."""
    host = info.get("HostConfig") or {}
    security = [str(option) for option in host.get("SecurityOpt") or []]
    pids = host.get("PidsLimit")
    return Sandbox(
        memory_bytes=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        pids_limit=int(pids) if pids else None,
        network=str(host.get("NetworkMode") or ""),
        read_only_root=bool(host.get("ReadonlyRootfs")),
        cap_drop=tuple(sorted(str(cap) for cap in host.get("CapDrop") or [])),
        no_new_privileges=any(o.replace("=", ":") in ("no-new-privileges:true", "no-new-privileges") for o in security),
        user=str((info.get("Config") or {}).get("User") or ""),
        seccomp_profile=seccomp_profile(security),
    )


def scratch_bytes(memory_bytes: int) -> int:
    """Size of each scratch tmpfs for a job with ``memory_bytes``: a quarter of it, 256 MiB at most."""
    return max(min(SHM_SIZE, memory_bytes // SCRATCH_SHARE) // MIB, 1) * MIB


def _hardened(memory_bytes: int, nano_cpus: int, pids_limit: int) -> dict[str, Any]:
    """What every container we create shares: no privilege, the project's seccomp profile, no swap,
    bounded pids, files and logs."""
    return {
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", seccomp.security_opt()],
        "pids_limit": pids_limit,
        "mem_limit": memory_bytes,
        "memswap_limit": memory_bytes,  # equal to mem_limit: no swap
        "oom_score_adj": OOM_SCORE_ADJ,
        "nano_cpus": nano_cpus,
        "ulimits": [
            Ulimit(name="nofile", soft=NOFILE_LIMIT, hard=NOFILE_LIMIT),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "ipc_mode": "private",
        "init": True,
        "privileged": False,
        "restart_policy": {"Name": "no"},
        "auto_remove": False,
        "log_config": LOG_CONFIG,
        "detach": True,
    }


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: the hardened contract, nothing from the job but limits."""
    env = {**spec.env, "HOME": WORK_DIR, "PYTHONUNBUFFERED": "1"}
    if spec.gpu_uuids:
        # Override whatever the image declares: the toolkit would honour an image's "all".
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    else:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    # The script directory is an anonymous volume so put_archive can fill it before start
    # (the rootfs is read-only and tmpfs is not mounted yet); it is root-owned, so the
    # non-root job can read it but not write to it. Removed with the container.
    mounts = [Mount(SCRIPT_DIR, None, type="volume")]
    if spec.deps_volume is not None:
        mounts.append(Mount(DEPS_DIR, spec.deps_volume, type="volume", read_only=True))
        env["PYTHONPATH"] = ":".join(p for p in (DEPS_SITE, spec.env.get("PYTHONPATH", "")) if p)
    scratch_mib = scratch_bytes(spec.memory_bytes) // MIB
    config: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": env,
        "user": JOB_USER,
        "working_dir": WORK_DIR,
        "network_mode": "none",
        "tmpfs": {
            "/tmp": f"rw,nosuid,nodev,size={scratch_mib}m",
            WORK_DIR: f"rw,nosuid,nodev,size={scratch_mib}m,uid=65534,gid=65534,mode=0700",
        },
        "mounts": mounts,
        "shm_size": scratch_mib * MIB,
        **_hardened(spec.memory_bytes, spec.nano_cpus, PIDS_LIMIT),
    }
    if spec.outputs_from is not None:
        config["volumes_from"] = [f"{spec.outputs_from}:rw"]
    if spec.gpu_uuids and spec.real_gpus:
        config["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_uuids), capabilities=[["gpu"]])
        ]
    return config


def holder_config(name: str, image: str, labels: Mapping[str, str], tmpfs_bytes: int) -> dict[str, Any]:
    """Keyword arguments for a job's outputs holder: it only sleeps, so that its /out tmpfs stays
    mounted after the job exits; the same hardened base, tiny limits."""
    owner = JOB_USER.split(":", maxsplit=1)[0]
    options = {"type": "tmpfs", "device": "tmpfs", "o": f"size={tmpfs_bytes},uid={owner},gid={owner},mode=0700"}
    return {
        "image": image,
        "command": HOLDER_COMMAND,
        "name": name,
        "labels": {**labels, LABEL_ROLE: HOLDER_ROLE},
        "environment": {"NVIDIA_VISIBLE_DEVICES": "void"},
        "user": JOB_USER,
        "network_mode": "none",
        "mounts": [Mount(OUT_DIR, None, type="volume", driver_config=DriverConfig("local", options))],
        **_hardened(HOLDER_MEMORY, HOLDER_NANO_CPUS, 16),
    }


def prep_container_config(spec: PrepSpec) -> dict[str, Any]:
    """Keyword arguments for the requirements step's container: a job container (``container_config``:
    no network, no GPU, the job's limits, every hardening) whose only mounts are the cache volume and
    an anonymous volume the wheels are put into. Never a host path."""
    job = ContainerSpec(
        name=spec.name,
        image=spec.image,
        command=spec.command,
        env={**spec.env, "PIP_NO_CACHE_DIR": "1"},
        labels=spec.labels,
        memory_bytes=spec.memory_bytes,
        nano_cpus=spec.nano_cpus,
    )
    config = container_config(job)
    config["mounts"] = [Mount(PREP_DEPS_DIR, spec.volume, type="volume"), Mount(PREP_WHEELS_DIR, None, type="volume")]
    return config


def _tar(files: Mapping[str, bytes], dirs: Mapping[str, int] | None = None) -> bytes:
    """A tar of read-only ``files`` (root-owned) and of ``dirs`` owned by the given uid (and gid)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, owner in (dirs or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.uid = info.gid = owner
            archive.addfile(info)
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


def container_error(exc: docker.errors.APIError, action: str, container: str | None = None) -> ContainerError:
    """The engine's refusal ``exc`` as our error: ``"{action}: {the engine's reason}"``, keeping its HTTP
    status and the container (id or name), as docker-py's create_api_error_from_http_exception keeps
    the response."""
    reason = exc.explanation or str(exc)
    return ContainerError(f"{action}: {reason}", status_code=exc.status_code, container=container)


@contextmanager
def docker_errors(
    action: str, container: str | None = None, *, ok: Collection[int] = (), transport: bool = False
) -> Iterator[None]:
    """docker-py's errors inside the block as one ContainerError (``container_error``).

    A status in ``ok`` is an answer, not a failure (404: there is none; 304: stopped already): the
    error is dropped and the code after the block runs. With ``transport``, requests' errors (no
    answer, a stream cut) become ContainerError too (no status); without, they pass to the caller,
    for whom a timed-out wait means "still running".
    """
    try:
        yield
    except docker.errors.APIError as exc:
        if exc.status_code not in ok:
            raise container_error(exc, action, container) from None
    except requests.exceptions.RequestException as exc:
        if not transport:
            raise
        raise ContainerError(f"{action}: {exc}", container=container) from None


class OutputStream:
    """A container's output as raw chunks, on a connection of its own; ``close`` works from any thread."""

    def __init__(self, client: docker.APIClient, chunks: Any, container_id: str) -> None:
        self._client = client
        self._chunks = chunks
        self._container_id = container_id

    def __iter__(self) -> Iterator[bytes]:
        with docker_errors("output stream failed", self._container_id, transport=True):
            yield from self._chunks

    def close(self) -> None:
        self._chunks.close()  # shuts the socket down, which wakes a reader blocked on it
        # docker-py's close leaves the socket's file objects open, and with them the descriptor.
        self._chunks._response.close()
        self._client.close()


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

    def _stream_client(self, timeout: float | None) -> docker.APIClient:
        """A client of its own for a long-lived stream, so no other call waits behind it."""
        version = self.client.api.api_version  # known already: no version round trip per stream
        return docker.APIClient(version=version, timeout=timeout, **docker.utils.kwargs_from_env())

    def version(self) -> str:
        try:
            return str(self.client.version().get("Version", "unknown"))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return "unknown"

    def info(self) -> dict[str, Any]:
        """The engine's system-wide information (``docker info``); ContainerError when it does not answer."""
        with docker_errors("docker info failed", transport=True):
            return dict(self.client.info())

    def check_seccomp(self) -> None:
        """ConfigError when the engine cannot apply a seccomp profile: no job may run without the project's.

        Docker lists ``name=seccomp,profile=...`` in its security options when its kernel and build
        support seccomp; without it, a container asking for a profile is refused at create.
        """
        options = [str(option) for option in self.info().get("SecurityOptions") or ()]
        if not any(option.startswith("name=seccomp") for option in options):
            raise ConfigError(
                "the Docker engine has no seccomp support (its security options: "
                f"{', '.join(options) or 'none'}): jobs run only under the project's seccomp profile, so this "
                "worker takes none; use a kernel and Docker built with seccomp"
            )

    def probe(self, timeout_s: float = 5.0) -> str:
        """The engine's version, asked on a connection of its own that gives up after ``timeout_s``
        (a hung engine must not hold up the caller); "" when it does not answer."""
        try:
            client = docker.APIClient(timeout=timeout_s, **docker.utils.kwargs_from_env())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return ""
        try:
            return str(client.version(api_version=False).get("Version", ""))
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return ""
        finally:
            client.close()

    def has_image(self, image: str) -> bool:
        return self.image_id(image) is not None

    def image_id(self, image: str) -> str | None:
        """The local image ID of ``image``; None when it is not here."""
        with docker_errors(f"cannot inspect image {image}", ok=(404,), transport=True):
            return str(self.client.api.inspect_image(image)["Id"])
        return None  # 404: not here

    def remove_image(self, image: str) -> None:
        """Remove a local image (never forced: one a container uses stays, with a 409 ContainerError)."""
        with docker_errors(f"cannot remove image {image}"):
            self.client.api.remove_image(image)

    def image_env(self, image: str) -> list[str]:
        """The ``KEY=value`` environment of the image's config (where it states its CUDA requirement)."""
        with docker_errors(f"cannot inspect image {image}"):
            env = (self.client.api.inspect_image(image).get("Config") or {}).get("Env") or []
        return [str(item) for item in env]

    def image_digests(self, image: str) -> frozenset[str]:
        """Every digest that names the local ``image``: its registry digests (RepoDigests) and its ID."""
        with docker_errors(f"cannot inspect image {image}"):
            info = self.client.api.inspect_image(image)
        digests = {str(entry).partition("@")[2] for entry in info.get("RepoDigests") or ()}
        return frozenset({*digests, str(info["Id"])} - {""})

    def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]:
        """Pull ``image``, yielding dockerd's progress events; ImageUnavailable when it fails.

        The read timeout bounds each silent stretch (a hung registry); the caller bounds the
        whole pull by closing the generator, which drops the connection and makes dockerd
        abandon the pull.
        """
        repository, tag = docker.utils.parse_repository_tag(image)
        params = {"fromImage": repository, "tag": tag or "latest"}  # a digest goes in "tag" too
        api = self._stream_client(stall_timeout_s)
        headers = {}
        registry, _ = docker.auth.resolve_repository_name(repository)
        auth = docker.auth.get_config_header(api, registry)
        if auth:
            headers["X-Registry-Auth"] = auth
        url = f"{api.base_url}/v{api.api_version}/images/create"
        try:
            with api.post(url, params=params, headers=headers, stream=True, timeout=stall_timeout_s) as response:
                if response.status_code >= 400:
                    message = f"image {image} is not available: {_api_message(response)}"
                    raise ImageUnavailable(message, status_code=response.status_code)
                for line in response.iter_lines():
                    if line:
                        yield _event(line)
        except requests.exceptions.RequestException as exc:
            reason = f"no progress for {stall_timeout_s:.0f} s" if _is_timeout(exc) else str(exc)[:200]
            raise ImageUnavailable(f"image {image} is not available: pull failed ({reason})") from None
        finally:
            api.close()

    def find(self, name: str) -> str | None:
        """The id of the container called ``name``, if any."""
        with docker_errors(f"cannot inspect container {name}", name, ok=(404,), transport=True):
            return str(self.client.api.inspect_container(name)["Id"])
        return None  # 404: no such container

    def create(self, spec: ContainerSpec) -> str:
        """Create the container and put its files in; NameTaken when the name (the job's lock) is taken."""
        container_id = self._create(container_config(spec), spec.image)
        if spec.files:
            self._put(container_id, SCRIPT_DIR, _tar(spec.files))
        return container_id

    def create_holder(self, name: str, image: str, labels: Mapping[str, str], tmpfs_bytes: int) -> str:
        """Create and start a job's outputs holder (``holder_config``); its id."""
        container_id = self._create(holder_config(name, image, labels, tmpfs_bytes), image)
        self.start(container_id)
        return container_id

    def archive(self, container_id: str, path: str) -> Iterator[bytes]:
        """The tar stream of ``path`` in the container, as the engine sends it (``docker cp``)."""
        with docker_errors(f"cannot read {path}", container_id, transport=True):
            chunks, _ = self.client.api.get_archive(container_id, path)
            yield from chunks

    def create_prep(self, spec: PrepSpec) -> str:
        """Create a requirements container whose site and temporary directories in the volume belong to
        the job user."""
        container_id = self._create(prep_container_config(spec), spec.image)
        uid = int(JOB_USER.split(":", maxsplit=1)[0])
        self._put(container_id, PREP_DEPS_DIR, _tar({}, {"site": uid, "tmp": uid}))
        return container_id

    def put_files(self, container_id: str, directory: str, paths: Sequence[Path]) -> None:
        """Copy host files (read-only, root-owned) into a created container's ``directory`` (a volume):
        streamed from a temporary tar, so wheels of any size never sit in memory."""
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for path in paths:
                    info = tar.gettarinfo(str(path), arcname=path.name)
                    info.mode, info.uid, info.gid, info.uname, info.gname = 0o444, 0, 0, "", ""
                    with path.open("rb") as data:
                        tar.addfile(info, data)
            archive.seek(0)
            try:
                with docker_errors("cannot put files into the container", container_id):
                    self.client.api.put_archive(container_id, directory, archive)
            except ContainerError:
                self.remove(container_id)
                raise

    def image_config(self, image: str) -> tuple[dict[str, str], str]:
        """(the environment its config declares, its architecture) of a local image."""
        with docker_errors(f"cannot inspect image {image}"):
            info = self.client.api.inspect_image(image)
        env = dict(entry.partition("=")[::2] for entry in (info.get("Config") or {}).get("Env") or ())
        return env, str(info.get("Architecture", ""))

    def link_target(self, container_id: str, path: str) -> str | None:
        """Where ``path`` in a created container's files resolves to (a symbolic link's target; the path
        itself otherwise); None when there is no such file. Nothing in the container runs."""
        with docker_errors(f"cannot read {path}", container_id, ok=(404,)):
            stream, stat = self.client.api.get_archive(container_id, path)
            for _ in stream:  # drain it, so the connection goes back to the pool
                pass
            return str(stat.get("linkTarget") or path)
        return None  # 404: no such file

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one gone already or in use (another worker's step holds it now) stays as it is."""
        with docker_errors(f"cannot remove volume {name}", ok=(404, 409)):
            self.client.api.remove_volume(name)

    def _create(self, config: dict[str, Any], image: str) -> str:
        name = config["name"]
        try:
            return str(self.client.containers.create(**config).id)
        except docker.errors.ImageNotFound:
            raise ImageUnavailable(f"image {image} is not available", status_code=404, container=name) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise NameTaken(f"container {name} exists already", status_code=409, container=name) from None
            if "seccomp" in str(exc.explanation or exc).lower():
                action = "the Docker engine refused the project's seccomp profile (tasks/seccomp.json)"
                raise container_error(exc, action, name) from None
            raise container_error(exc, "cannot create container", name) from None
        except requests.exceptions.RequestException as exc:  # no answer: the engine is gone
            raise ContainerError(f"cannot create container: {exc}", container=name) from None

    def _put(self, container_id: str, path: str, archive: bytes) -> None:
        try:
            with docker_errors("cannot put files into the container", container_id, transport=True):
                self.client.api.put_archive(container_id, path, archive)
        except ContainerError:
            self.remove(container_id)  # a container without its files must never start
            raise

    def has_file(self, container_id: str, path: str) -> bool:
        """True when ``path`` exists in the container (created or not: its volumes are mounted for this)."""
        with docker_errors(f"cannot read {path}", container_id, ok=(404,), transport=True):
            stream, _ = self.client.api.get_archive(container_id, path)
            for _ in stream:  # drain it, so the connection goes back to the pool
                pass
            return True
        return False  # 404: no such file

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        with docker_errors(f"cannot create volume {name}", transport=True):
            self.client.api.create_volume(name, labels=dict(labels))

    def volume_created(self, name: str) -> str | None:
        """When the volume was created (its identity: a pruned and recreated one differs); None if absent."""
        with docker_errors(f"cannot inspect volume {name}", ok=(404,), transport=True):
            return str(self.client.api.inspect_volume(name).get("CreatedAt", ""))
        return None  # 404: no such volume

    def start(self, container_id: str) -> None:
        with docker_errors("start failed", container_id, transport=True):
            self.client.api.start(container_id)

    def attach(self, container_id: str) -> OutputStream:
        """Stdout and stderr from now on, with back-pressure: call before ``start`` to get every byte."""
        api = self._stream_client(None)  # a job may be silent for hours: never time out a read
        try:
            with docker_errors("attach failed", container_id, transport=True):
                chunks = api.attach(container_id, stdout=True, stderr=True, stream=True, logs=False)
        except ContainerError:
            api.close()
            raise
        return OutputStream(api, chunks, container_id)

    def logs(self, container_id: str) -> OutputStream:
        """Stdout and stderr as the log driver kept them, from the start, following until exit."""
        api = self._stream_client(None)
        try:
            with docker_errors("log stream failed", container_id, transport=True):
                chunks = api.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
        except ContainerError:
            api.close()
            raise
        return OutputStream(api, chunks, container_id)

    def output_tail(self, container_id: str, lines: int) -> bytes:
        """The last ``lines`` lines a finished container wrote."""
        with docker_errors("cannot read the output", container_id, transport=True):
            return bytes(self.client.api.logs(container_id, stdout=True, stderr=True, tail=lines))

    def wait(self, container_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True when the container has exited (or is gone). EngineUnreachable
        when the engine itself no longer answers (restarting or stopped)."""
        try:
            with docker_errors("wait failed", container_id, ok=(404,)):
                self.client.api.wait(container_id, timeout=timeout_s)
        except requests.exceptions.ReadTimeout:
            return False  # still running: docker-py raises requests' errors, not its own
        except requests.exceptions.ConnectionError as exc:
            # A read timeout can come as a ConnectionError too: only an engine that does not answer a
            # fresh connection is gone.
            if not self.probe(ENGINE_PROBE_S):
                raise EngineUnreachable(f"the Docker engine stopped answering: {exc}", container=container_id) from None
            return False
        return True

    def reachable(self) -> bool:
        """Whether the engine answers now (a fresh connection, a short timeout)."""
        return bool(self.probe(ENGINE_PROBE_S))

    def state(self, container_id: str) -> ContainerState:
        with docker_errors("inspect failed", container_id, transport=True):
            info = self.client.api.inspect_container(container_id)
        state = info["State"]
        return ContainerState(
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            started_at_ms=_ms(state.get("StartedAt", "")),
            finished_at_ms=_ms(state.get("FinishedAt", "")),
            image_id=str(info.get("Image", "")),
            created_at_ms=_ms(str(info.get("Created", ""))),
            labels=dict((info.get("Config") or {}).get("Labels") or {}),
            runtime=str(info.get("HostConfig", {}).get("Runtime") or ""),
            sandbox=applied_sandbox(info),
        )

    def stop(self, container_id: str, grace_s: int) -> None:
        try:
            with docker_errors("stop failed", container_id, ok=(304, 404)):  # already stopped or gone
                # The HTTP call itself lasts up to the grace period: give it room beyond it.
                self.client.api.stop(container_id, timeout=grace_s)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            log.warning("container %s: stop did not answer in time; killing it", container_id[:12])

    def kill(self, container_id: str) -> None:
        with docker_errors("kill failed", container_id, ok=(404, 409), transport=True):  # gone or not running
            self.client.api.kill(container_id)

    def remove(self, container_id: str) -> None:
        try:
            with docker_errors("remove failed", container_id, ok=(404,), transport=True):
                self.client.api.remove_container(container_id, force=True, v=True)
        except ContainerError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return  # another worker is removing it
            raise

    def labelled(self, label: str, value: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """(id, labels) of every container, running or not, that carries ``label`` (=value)."""
        selector = label if value is None else f"{label}={value}"
        with docker_errors("list failed", transport=True):
            found = self.client.api.containers(all=True, filters={"label": selector})
        return [(str(c["Id"]), dict(c.get("Labels") or {})) for c in found]


def _event(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {"status": line.decode("utf-8", "replace")[:200]}
    return value if isinstance(value, dict) else {"status": str(value)[:200]}


def _api_message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.reason))[:200]
    except ValueError:
        return str(response.reason)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower()
