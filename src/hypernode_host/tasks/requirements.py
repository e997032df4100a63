"""A job's ``requirements`` (upstream's field, which never worked upstream): checked, downloaded, installed, cached.

A job may name one PEP 508 requirement per line and nothing else: no pip options, URLs or
paths (``jobs.parse_requirements``). Two steps make them importable, and neither gives code from
the job's image more than the job itself gets:

1. **Download**, by the agent's own pip, in the worker process (``pip download
   --only-binary=:all:``: wheels only, so nothing is built and no package code runs), from
   ``HN_PIP_INDEX_URL`` and/or ``HN_PIP_FIND_LINKS`` (a directory the worker reads, or a URL). The
   wheels are chosen for the job's image without running anything of it: its Python version comes
   from the image's ``PYTHON_VERSION`` (official images set it) or from where its ``python3``
   links to (``/usr/bin/python3`` → ``python3.11``), its platform from the image's architecture.
   This is the only step with a network, and it is the agent's.
2. **Install**, by the image's own ``python -m pip install --no-index`` from those wheels, copied
   into the step's container (``put_archive``, never a host path), with ``--target`` into a Docker
   volume. The image is job code (its interpreter's start-up may run anything), so the step's
   container is built by the same ``container_config`` as the job's: no network, the job's memory,
   CPUs and pids, the project's seccomp profile, no capabilities, a read-only root.

Both run inside the job's own deadline: the time they take counts against its timeout. The volume
is named after the node's identity and the SHA-256 of the image ID and the normalized requirements;
the step's container name (``hn-prep-<node>-<hash>``) is the lock that makes two workers needing the
same new requirements install them once, and later jobs with the same pair reuse the volume, which
the job container mounts read-only on its PYTHONPATH. A volume is ready once the step wrote its
marker after pip succeeded; a step that failed or was interrupted removes its volume. Cache volumes
are labelled ``hypernode.requirements``; nothing evicts them yet.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import Reason
from hypernode_host.errors import ContainerError, NameTaken, RequirementsFailed
from hypernode_host.settings import Settings
from hypernode_host.tasks.containers import (
    LABEL_NODE,
    LABEL_NODE_ID,
    LABEL_REQUIREMENTS,
    LABEL_ROLE,
    LABEL_WORKER,
    PREP_DEPS_DIR,
    PREP_SITE,
    PREP_WHEELS_DIR,
    ContainerState,
    PrepSpec,
    owned_by,
)

log = logging.getLogger(__name__)

PREP_ROLE = "prep"
READY_MARKER = PREP_SITE + "/.hypernode-ready"
PREP_TMP = PREP_DEPS_DIR + "/tmp"  # pip unpacks here, in the volume: the job's /tmp is small
# A step container that exited this long ago is left over by a dead worker: a live one removes it as
# soon as it exits. One never started may be a live worker's still downloading, which ends with that
# job's deadline at the latest (HN_JOB_TIMEOUT caps it), so only past that plus this margin is it left
# over. (A dead worker's slot reaps its step containers when it starts again, long before either.)
ABANDONED_AFTER_S = 10.0
_POLL_S = 0.5
# A pip error is one line starting with ERROR:; the last one says why (not found, no wheel, conflict).
_PIP_ERROR = re.compile(r"^ERROR:\s*(.+)$")
_PYTHON_LINK = re.compile(r"python(\d+)\.(\d+)$")
_PYTHON_VERSION = re.compile(r"^(\d+)\.(\d+)")
# Where an image's interpreter usually is: official images, then Debian's and Ubuntu's.
PYTHON_PATHS = ("/usr/local/bin/python3", "/usr/bin/python3")
# Docker's architecture names → the wheel platform tags for it. manylinux_2_28 is the newest glibc
# asked for (RHEL 8, Debian 10+, Ubuntu 18.10+); a wheel the image cannot take is refused by the
# image's own pip at install, never loaded.
_ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
_GLIBC_MINORS = range(28, 16, -1)
_INSTALL_SCRIPT = (
    "set -e; find {site} -mindepth 1 -delete; "
    "python -m pip install --disable-pip-version-check --no-input --progress-bar off --no-warn-script-location "
    '--no-index --find-links {wheels} --only-binary=:all: --target {site} "$@"; '
    "find {tmp} -mindepth 1 -delete; : > {marker}"
)


class PrepRuntime(Protocol):
    """The container operations the preparation step needs (DockerRuntime in production)."""

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None: ...
    def volume_created(self, name: str) -> str | None: ...
    def remove_volume(self, name: str) -> None: ...
    def image_config(self, image: str) -> tuple[dict[str, str], str]: ...
    def create_prep(self, spec: PrepSpec) -> str: ...
    def link_target(self, container_id: str, path: str) -> str | None: ...
    def put_files(self, container_id: str, directory: str, paths: Sequence[Path]) -> None: ...
    def has_file(self, container_id: str, path: str) -> bool: ...
    def find(self, name: str) -> str | None: ...
    def start(self, container_id: str) -> None: ...
    def wait(self, container_id: str, timeout_s: float) -> bool: ...
    def state(self, container_id: str) -> ContainerState: ...
    def output_tail(self, container_id: str, lines: int) -> bytes: ...
    def remove(self, container_id: str) -> None: ...


def cache_key(image_id: str, requirements: Sequence[str]) -> str:
    """SHA-256 of the image ID and the normalized requirements: wheels fit one interpreter, so both count."""
    return hashlib.sha256("\n".join([image_id, *requirements]).encode()).hexdigest()


def volume_name(node: str, key: str) -> str:
    """The cache volume of ``node``: nodes sharing an engine never share what their wheel sources gave."""
    return f"hn-req-{node}-{key[:16]}"


@dataclass(frozen=True)
class PipSource:
    """Where the agent's pip finds wheels: its index and find-links arguments."""

    args: tuple[str, ...]


def pip_source(settings: Settings) -> PipSource | None:
    """The configured wheel source; None when the node has none (it then refuses requirements)."""
    index, links = settings.pip_index_url, settings.pip_find_links
    if index is None and links is None:
        return None
    args: list[str] = ["--index-url", index] if index is not None else ["--no-index"]
    if links is not None:
        args += ["--find-links", links]
    return PipSource(tuple(args))


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the wheels must fit: the job image's."""

    python: tuple[int, int]
    machine: str  # x86_64, aarch64

    def platforms(self) -> list[str]:
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in _GLIBC_MINORS]
        return [*tags, f"manylinux2014_{self.machine}", f"manylinux2010_{self.machine}", f"manylinux1_{self.machine}"]


def python_from_env(env: Mapping[str, str]) -> tuple[int, int] | None:
    """The Python version an image declares in its config (the official images' PYTHON_VERSION)."""
    match = _PYTHON_VERSION.match(env.get("PYTHON_VERSION", ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def python_from_link(target: str | None) -> tuple[int, int] | None:
    """The version in what an interpreter's link points to (``/usr/bin/python3.11``)."""
    match = _PYTHON_LINK.search(target or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def download_command(source: PipSource, target: Target, dest: str, requirements: Sequence[str]) -> list[str]:
    """The agent's own ``pip download``: wheels only (nothing built, no package code run), for ``target``."""
    major, minor = target.python
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--dest",
        dest,
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for platform in target.platforms():
        command += ["--platform", platform]
    return [*command, *source.args, *requirements]


def pip_reason(output: bytes) -> str:
    """pip's reason for failing, in one line."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [m.group(1) for m in map(_PIP_ERROR.match, lines) if m]
    reason = errors[-1] if errors else (lines[-1] if lines else "pip failed without saying why")
    return reason[:300]


@dataclass(frozen=True)
class Limits:
    """The job's own: the step that runs its image gets no more."""

    memory_bytes: int
    nano_cpus: int
    timeout_s: float  # what is left of the job's timeout


class RequirementsInstaller:
    """Makes the cache volume for (image, requirements) ready, running the preparation step when it is not."""

    def __init__(
        self,
        runtime: PrepRuntime,
        settings: Settings,
        slot_id: int,
        node: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.slot_id = slot_id
        self.node = node  # the node's identity, asked when first needed
        self.clock = clock  # for deadlines
        self.wall_ms = wall_ms  # to compare with the times Docker reports
        self._ready: dict[str, str] = {}  # volume → its CreatedAt when this process saw it ready

    def ensure(
        self, image_id: str, requirements: Sequence[str], limits: Limits, should_stop: Callable[[], bool]
    ) -> str | None:
        """The ready volume's name; None when ``should_stop`` said so first; RequirementsFailed with the reason."""
        source = pip_source(self.settings)
        if source is None:
            raise RequirementsFailed("requirements are not supported by this node (no HN_PIP_FIND_LINKS or index)")
        key = cache_key(image_id, requirements)
        volume = volume_name(self.node(), key)
        created = self.runtime.volume_created(volume)
        if created is not None and self._ready.get(volume) == created:
            return volume
        deadline = self.clock() + limits.timeout_s
        spec = self._spec(key, image_id, volume, requirements, limits)
        container_id = self._claim(spec, deadline, should_stop)
        if container_id is None:
            return None
        ready = False
        try:
            ready = self.runtime.has_file(container_id, READY_MARKER)  # another worker's step finished it
            if not ready:
                ready = self._install(container_id, image_id, source, requirements, limits, deadline, should_stop)
        finally:
            self.runtime.remove(container_id)
            if not ready:  # failed or interrupted: nothing half-made is left for the next job
                self.runtime.remove_volume(volume)
        if not ready:
            return None
        self._ready[volume] = self.runtime.volume_created(volume) or ""
        return volume

    def _spec(self, key: str, image_id: str, volume: str, requirements: Sequence[str], limits: Limits) -> PrepSpec:
        script = _INSTALL_SCRIPT.format(site=PREP_SITE, wheels=PREP_WHEELS_DIR, tmp=PREP_TMP, marker=READY_MARKER)
        node = self.node()
        return PrepSpec(
            name=f"hn-prep-{node}-{key[:16]}",
            image=image_id,
            command=["sh", "-c", script, "hn-prep", *requirements],
            labels={
                LABEL_NODE: self.settings.node_name,
                LABEL_NODE_ID: node,
                LABEL_WORKER: str(self.slot_id),
                LABEL_ROLE: PREP_ROLE,
                LABEL_REQUIREMENTS: key,
            },
            volume=volume,
            memory_bytes=limits.memory_bytes,
            nano_cpus=limits.nano_cpus,
            env={"TMPDIR": PREP_TMP},
        )

    def _claim(self, spec: PrepSpec, deadline: float, should_stop: Callable[[], bool]) -> str | None:
        """Create the step's container; its name is the lock, so wait while another worker holds it."""
        labels = {k: spec.labels[k] for k in (LABEL_REQUIREMENTS, LABEL_NODE, LABEL_NODE_ID)}
        while True:
            self.runtime.ensure_volume(spec.volume, labels)  # again each time: a failed step removes it
            try:
                return self.runtime.create_prep(spec)
            except NameTaken:
                pass
            holder = self.runtime.find(spec.name)
            if holder is not None and self._abandoned(holder):
                log.info("removing abandoned requirements container %s", spec.name)
                self.runtime.remove(holder)
                continue
            if should_stop():
                return None
            self._check_deadline(deadline, f"another install held {spec.name} for the rest of the job's timeout")
            time.sleep(_POLL_S)

    def _abandoned(self, container_id: str) -> bool:
        try:
            state = self.runtime.state(container_id)
        except ContainerError:
            return False  # removed meanwhile: the next create tells
        if not owned_by(self.node(), state.labels):
            return False  # another node's: never ours to remove
        if state.running:
            return False
        if state.finished_at_ms:
            return self.wall_ms() - state.finished_at_ms > ABANDONED_AFTER_S * 1000
        held_s = self.settings.job_timeout + ABANDONED_AFTER_S  # created, and never started
        return bool(state.created_at_ms) and self.wall_ms() - state.created_at_ms > held_s * 1000

    def _check_deadline(self, deadline: float, what: str) -> None:
        if self.clock() > deadline:
            raise RequirementsFailed(f"requirements: {what}", reason=Reason.TIMEOUT)

    def _install(
        self,
        container_id: str,
        image_id: str,
        source: PipSource,
        requirements: Sequence[str],
        limits: Limits,
        deadline: float,
        should_stop: Callable[[], bool],
    ) -> bool:
        target = self._target(container_id, image_id)
        log.info(
            "installing %d requirement(s) for Python %d.%d on %s: %s",
            len(requirements),
            *target.python,
            target.machine,
            ", ".join(requirements)[:300],
        )
        with tempfile.TemporaryDirectory(prefix="hn-wheels-") as dest:
            if not self._download(download_command(source, target, dest, requirements), deadline, should_stop):
                return False
            self.runtime.put_files(container_id, PREP_WHEELS_DIR, sorted(Path(dest).glob("*.whl")))
        self.runtime.start(container_id)
        while not self.runtime.wait(container_id, _POLL_S * 2):
            if should_stop():
                return False
            self._check_deadline(deadline, f"not installed within the job's timeout ({limits.timeout_s:.0f} s)")
        state = self.runtime.state(container_id)
        if state.exit_code != 0:
            reason = "out of memory" if state.oom_killed else pip_reason(self.runtime.output_tail(container_id, 50))
            raise RequirementsFailed(f"requirements could not be installed: {reason}")
        return True

    def _target(self, container_id: str, image_id: str) -> Target:
        """The image's Python and platform, read from its config and its files: nothing of it runs."""
        env, architecture = self.runtime.image_config(image_id)
        machine = _ARCHES.get(architecture)
        if machine is None:
            raise RequirementsFailed(f"requirements: no wheels are chosen for images of architecture {architecture!r}")
        python = python_from_env(env)
        for path in PYTHON_PATHS:
            if python is not None:
                break
            python = python_from_link(self.runtime.link_target(container_id, path))
        if python is None:
            python = sys.version_info[:2]
            log.warning("cannot tell the Python version of image %s: wheels for Python %d.%d", image_id, *python)
        return Target(python, machine)

    def _download(self, command: list[str], deadline: float, should_stop: Callable[[], bool]) -> bool:
        """Run the agent's pip download; False when ``should_stop`` said so; RequirementsFailed with pip's reason."""
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            try:
                while True:
                    try:
                        code = process.wait(_POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if should_stop():
                        return False
                    self._check_deadline(deadline, "not downloaded within the job's timeout")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if code != 0:
                output.seek(0)
                raise RequirementsFailed(f"requirements could not be installed: {pip_reason(output.read()[-65536:])}")
        return True
