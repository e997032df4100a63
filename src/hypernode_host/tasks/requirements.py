"""A job's ``requirements`` (upstream's field, which never worked upstream): checked, installed, cached.

A job may name one PEP 508 requirement per line and nothing else: no pip options, URLs or
paths (``jobs.parse_requirements``). A preparation container, which never runs job code
(``--only-binary=:all:``: wheels only, and installing a wheel runs none of its code),
pip-installs them with ``--target`` into a Docker volume named after the SHA-256 of the image
ID and the normalized requirements; its name (``hn-prep-<hash>``) is the lock that makes two
workers needing the same new requirements install them once. Later jobs with the same pair
reuse the volume. The job container mounts it read-only on its PYTHONPATH and keeps network
none. Cache volumes are labelled ``hypernode.requirements``; the image cache (tasks/imagecache.py)
collects them least recently used first.

Where the wheels come from:

- ``HN_PIP_FIND_LINKS`` naming a host directory (a wheelhouse, readable by uid 65534): mounted
  read-only into the preparation container only, used with ``--no-index``; network none.
- ``HN_PIP_INDEX_URL`` (or an http(s) ``HN_PIP_FIND_LINKS``): the preparation container, and it
  alone, runs with ``network_mode=host``, since on hosts whose Docker has no bridge network
  that is the only way to reach an index. It still runs no job code; the job has no network.

A volume is ready once the step wrote its marker after pip succeeded; a step that failed or
was interrupted leaves no marker, and the next one starts the volume over.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hypernode_host.core.clock import now_ms
from hypernode_host.errors import ContainerError, NameTaken, RequirementsFailed
from hypernode_host.settings import Settings
from hypernode_host.tasks.containers import (
    LABEL_NODE,
    LABEL_REQUIREMENTS,
    LABEL_ROLE,
    LABEL_WORKER,
    PREP_SITE,
    PREP_WHEELS_DIR,
    ContainerState,
    PrepSpec,
)

log = logging.getLogger(__name__)

PREP_TIMEOUT_S = 600.0
PREP_ROLE = "prep"
READY_MARKER = PREP_SITE + "/.hypernode-ready"
# A step container that exited, or was never started, this long ago is left over by a dead worker:
# a live one starts its container within milliseconds and removes it as soon as it exits.
ABANDONED_AFTER_S = 10.0
_POLL_S = 0.5
# A pip error is one line starting with ERROR:; the last one says why (not found, no wheel, conflict).
_PIP_ERROR = re.compile(r"^ERROR:\s*(.+)$")
_PREP_SCRIPT = (
    "set -e; find {site} -mindepth 1 -delete; "
    "python -m pip install --disable-pip-version-check --no-input --progress-bar off "
    '--no-warn-script-location --only-binary=:all: --target {site} "$@"; '
    ": > {marker}"
)


class PrepRuntime(Protocol):
    """The container operations the preparation step needs (DockerRuntime in production)."""

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None: ...
    def volume_created(self, name: str) -> str | None: ...
    def create_prep(self, spec: PrepSpec) -> str: ...
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


def volume_name(key: str) -> str:
    return f"hn-req-{key[:16]}"


@dataclass(frozen=True)
class PipSource:
    """Where the preparation step's pip finds wheels, and the network that takes."""

    args: tuple[str, ...]
    wheelhouse: str | None
    network: str


def pip_source(settings: Settings) -> PipSource | None:
    """The configured wheel source; None when the node has none (it then refuses requirements)."""
    index, links = settings.pip_index_url, settings.pip_find_links
    if index is None and links is None:
        return None
    args: list[str] = []
    wheelhouse = None
    if index is not None:
        args += ["--index-url", index]
    if links is not None and links.startswith(("http://", "https://")):
        args += ["--find-links", links]
    elif links is not None:
        wheelhouse = str(Path(links).resolve())
        args += ["--find-links", PREP_WHEELS_DIR]
    if index is None:
        args.insert(0, "--no-index")
    network = "none" if index is None and wheelhouse is not None else "host"
    return PipSource(tuple(args), wheelhouse, network)


def pip_reason(output: bytes) -> str:
    """pip's reason for failing, in one line."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [m.group(1) for m in map(_PIP_ERROR.match, lines) if m]
    reason = errors[-1] if errors else (lines[-1] if lines else "pip failed without saying why")
    return reason[:300]


class RequirementsInstaller:
    """Makes the cache volume for (image, requirements) ready, running the preparation step when it is not."""

    def __init__(
        self,
        runtime: PrepRuntime,
        settings: Settings,
        slot_id: int,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.slot_id = slot_id
        self.clock = clock  # for deadlines
        self.wall_ms = wall_ms  # to compare with the times Docker reports
        self._ready: dict[str, str] = {}  # volume → its CreatedAt when this process saw it ready

    def ensure(self, image_id: str, requirements: Sequence[str], should_stop: Callable[[], bool]) -> str | None:
        """The ready volume's name; None when ``should_stop`` said so first; RequirementsFailed with pip's reason."""
        source = pip_source(self.settings)
        if source is None:
            raise RequirementsFailed("requirements are not supported by this node (no HN_PIP_FIND_LINKS or index)")
        key = cache_key(image_id, requirements)
        volume = volume_name(key)
        created = self.runtime.volume_created(volume)
        if created is not None and self._ready.get(volume) == created:
            return volume
        self.runtime.ensure_volume(volume, {LABEL_REQUIREMENTS: key, LABEL_NODE: self.settings.node_name})
        deadline = self.clock() + PREP_TIMEOUT_S
        spec = self._spec(key, image_id, volume, source, requirements)
        container_id = self._claim(spec, deadline, should_stop)
        if container_id is None:
            return None
        try:
            ready = self.runtime.has_file(container_id, READY_MARKER)  # another worker's step finished it
            if not ready and not self._install(container_id, requirements, deadline, should_stop):
                return None
        finally:
            self.runtime.remove(container_id)
        self._ready[volume] = self.runtime.volume_created(volume) or ""
        return volume

    def _spec(self, key: str, image_id: str, volume: str, source: PipSource, requirements: Sequence[str]) -> PrepSpec:
        script = _PREP_SCRIPT.format(site=PREP_SITE, marker=READY_MARKER)
        return PrepSpec(
            name=f"hn-prep-{key[:16]}",
            image=image_id,
            command=["sh", "-c", script, "hn-prep", *source.args, *requirements],
            labels={
                LABEL_NODE: self.settings.node_name,
                LABEL_WORKER: str(self.slot_id),
                LABEL_ROLE: PREP_ROLE,
                LABEL_REQUIREMENTS: key,
            },
            volume=volume,
            wheelhouse=source.wheelhouse,
            network=source.network,
        )

    def _claim(self, spec: PrepSpec, deadline: float, should_stop: Callable[[], bool]) -> str | None:
        """Create the step's container; its name is the lock, so wait while another worker holds it."""
        while True:
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
            if self.clock() > deadline:
                raise RequirementsFailed(f"requirements: another install held {spec.name} for too long")
            time.sleep(_POLL_S)

    def _abandoned(self, container_id: str) -> bool:
        try:
            state = self.runtime.state(container_id)
        except ContainerError:
            return False  # removed meanwhile: the next create tells
        if state.running:
            return False
        since = state.finished_at_ms or state.created_at_ms  # exited, or created and never started
        return bool(since) and self.wall_ms() - since > ABANDONED_AFTER_S * 1000

    def _install(
        self, container_id: str, requirements: Sequence[str], deadline: float, should_stop: Callable[[], bool]
    ) -> bool:
        log.info("installing %d requirement(s): %s", len(requirements), ", ".join(requirements)[:300])
        self.runtime.start(container_id)
        while not self.runtime.wait(container_id, _POLL_S * 2):
            if should_stop():
                return False
            if self.clock() > deadline:
                raise RequirementsFailed(f"requirements could not be installed in {PREP_TIMEOUT_S:.0f} s")
        state = self.runtime.state(container_id)
        if state.exit_code != 0:
            reason = "out of memory" if state.oom_killed else pip_reason(self.runtime.output_tail(container_id, 50))
            raise RequirementsFailed(f"requirements could not be installed: {reason}")
        return True
