"""Admission: what this node refuses before any Docker call, and where an accepted job is queued."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass

from hypernode_host.core.jobs import JobSpec, Reason
from hypernode_host.core.slots import Slot, queue_for
from hypernode_host.errors import JobRejected
from hypernode_host.escapes import shown
from hypernode_host.settings import Settings

MIN_MEMORY = 32 << 20  # below this Docker refuses the container or Python cannot start


@dataclass(frozen=True)
class Admission:
    queue: str
    image: str
    timeout_s: float
    requirements: tuple[str, ...] = ()  # normalized; installed by the worker before the job starts


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def job_memory_ceiling(settings: Settings) -> int:
    """The most memory one job may be given: the host's, less what the node keeps for dockerd, Redis and
    itself (a job holding all of it would starve the node that has to stop it)."""
    return max(host_memory_bytes() - (settings.memory_reserve << 20), 0)


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def admit(spec: JobSpec, settings: Settings, slots: Sequence[Slot]) -> Admission:
    """The queue, image and time limit of an acceptable job; JobRejected with the reason otherwise."""
    image = spec.image or (settings.gpu_image() if spec.gpus else settings.job_image)
    if not image_allowed(image, settings.image_patterns()):
        raise JobRejected(f"image '{shown(image, 80)}' is not allowed on this node", reason=Reason.IMAGE_NOT_ALLOWED)
    requirements = spec.requirement_list
    if requirements and settings.pip_find_links is None and settings.pip_index_url is None:
        raise JobRejected(
            "requirements are not supported by this node (no HN_PIP_FIND_LINKS or HN_PIP_INDEX_URL)",
            reason=Reason.UNSUPPORTED,
        )
    if spec.datasets:
        raise JobRejected(
            "datasets are not supported by this node (jobs run without network)", reason=Reason.UNSUPPORTED
        )
    most = job_memory_ceiling(settings)
    if not MIN_MEMORY <= spec.memory_bytes <= most:
        raise JobRejected(
            f"memoryLimit {shown(spec.memoryLimit, 32)} is outside 32m..{most >> 20}m on this node "
            f"(its memory less HN_MEMORY_RESERVE={settings.memory_reserve}m for the node itself)",
            reason=Reason.NO_CAPACITY,
        )
    if spec.cpuLimit > (os.cpu_count() or 1):
        raise JobRejected(
            f"cpuLimit {spec.cpuLimit} exceeds this node's {os.cpu_count()} CPUs", reason=Reason.NO_CAPACITY
        )
    timeout = min(spec.timeout or settings.job_timeout, settings.job_timeout)
    queue = queue_for(spec.gpus, spec.gpuMemoryMb, slots)
    return Admission(queue=queue, image=image, timeout_s=timeout, requirements=requirements)
