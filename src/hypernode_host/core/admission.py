"""Admission: what this node refuses before any Docker call, and where an accepted job is queued."""

from __future__ import annotations

import fnmatch
import os
import re
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
    # Set when only digest-pinned entries allow the image: the worker runs it only if it is one of these.
    digests: tuple[str, ...] = ()


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def job_memory_ceiling(settings: Settings) -> int:
    """The most memory one job may be given: the host's, less what the node keeps for dockerd, Redis and
    itself (a job holding all of it would starve the node that has to stop it)."""
    return max(host_memory_bytes() - (settings.memory_reserve << 20), 0)


PIN = "@sha256:"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Registries where anyone may open an account and publish under a namespace of their choosing.
PUBLIC_REGISTRIES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


def split_pin(pattern: str) -> tuple[str, str | None]:
    """An allow-list entry as (name pattern, pinned digest or None): ``name@sha256:<64 hex>`` pins one image."""
    name, sep, digest = pattern.partition(PIN)
    if sep and _DIGEST.match("sha256:" + digest):
        return name, "sha256:" + digest
    return pattern, None


def _repository(image: str) -> str:
    """The image's repository, without the tag or digest it is asked by (``reg:5000/repo:1`` → ``reg:5000/repo``)."""
    name = image.partition("@")[0]
    head, slash, last = name.rpartition("/")
    return head + slash + last.partition(":")[0]


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    return pinned_digests(image, patterns) is not None


def pinned_digests(image: str, patterns: Sequence[str]) -> tuple[str, ...] | None:
    """None when no entry allows ``image``; () when an unpinned one does (any image of that name runs);
    else the digests the pinned entries that match allow, one of which the image run must be."""
    digests: list[str] = []
    for pattern in patterns:
        name, digest = split_pin(pattern)
        if digest is None:
            if fnmatch.fnmatchcase(image, pattern):
                return ()
        elif fnmatch.fnmatchcase(image.partition("@")[0], name) or fnmatch.fnmatchcase(_repository(image), name):
            digests.append(digest)  # any tag of the pinned name: the image run must be the pinned one
    return tuple(digests) or None


def _wild(text: str) -> bool:
    return any(c in text for c in "*?[")


def open_patterns(patterns: Sequence[str]) -> list[str]:
    """Unpinned entries that let people the operator never chose publish an image that matches.

    On Docker Hub (a name with no registry host, or docker.io) anyone may open an account: any
    wildcard there is open, ``*`` and ``someuser/*`` alike (every tag its owner, or whoever takes the
    account over, ever pushes). Elsewhere, a wildcard in the registry (``127.0.0.1:*/…``) or in the
    namespace (``ghcr.io/*``) is open; one within a namespace (``ghcr.io/acme/*``) is not.
    """
    found = []
    for pattern in patterns:
        name, digest = split_pin(pattern)
        if digest is not None:
            continue
        parts = name.split("/")
        host = parts[0] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost") else None
        public = host is None or host in PUBLIC_REGISTRIES
        if _wild(name) if public else _wild(str(host)) or _wild(parts[1]):
            found.append(pattern)
    return found


def admit(spec: JobSpec, settings: Settings, slots: Sequence[Slot]) -> Admission:
    """The queue, image and time limit of an acceptable job; JobRejected with the reason otherwise."""
    image = spec.image or (settings.gpu_image() if spec.gpus else settings.job_image)
    digests = pinned_digests(image, settings.image_patterns())
    if digests is None:
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
    return Admission(queue=queue, image=image, timeout_s=timeout, requirements=requirements, digests=digests)
