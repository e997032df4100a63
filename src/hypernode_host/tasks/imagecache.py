"""The image cache: jobs' images pulled as a visible phase, with retries, and the disk kept above a floor.

A job's image that is not here is pulled (tasks/images.py ``ensure_image``); the bytes and percent
of the pull are written to Redis as it goes (state/imagecache.py), so `jobs`, `job` and `top` show
the job pulling. A pull that fails is tried again after a backoff (PULL_BACKOFF_S, doubling), at most
PULL_ATTEMPTS times, then the job ends ``image_pull_failed``; a pull that outlives HN_PULL_TIMEOUT is
not retried (``image_pull_timeout``), nor one the registry refuses for good (no such image, access denied).

Before a job pulls, the free space of the Docker data root is kept at HN_DISK_FLOOR: the images jobs
used and the requirements volumes are removed least recently used first, never the default images
(HN_JOB_IMAGE, HN_GPU_JOB_IMAGE) nor HN_PREPULL (pulled at start, kept), never one a container still
uses (Docker refuses). Below the floor with nothing left to remove, the job is refused (``disk_full``)
with what is free and what the floor is.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import Reason
from hypernode_host.errors import ContainerError, ImageUnavailable, JobRejected
from hypernode_host.settings import Settings
from hypernode_host.state.imagecache import ImageUse, PullPhase
from hypernode_host.tasks.images import ImageRuntime, ensure_image

log = logging.getLogger(__name__)

PULL_ATTEMPTS = 3
PULL_BACKOFF_S = 2.0  # before the second attempt; doubles after each failure
PHASE_EVERY_S = 1.0  # a pull's bytes are written to Redis at most this often
# What the registry says when trying again cannot help: the image is not there, or not for us.
PERMANENT = ("not found", "manifest unknown", "pull access denied", "unauthorized", "invalid reference", "denied")


class CacheRuntime(ImageRuntime, Protocol):
    def info(self) -> dict[str, Any]: ...
    def remove_image(self, image: str) -> None: ...
    def remove_volume(self, name: str) -> None: ...


def free_bytes_of(runtime: CacheRuntime) -> Callable[[], int | None]:
    """The free bytes of the Docker data root, read now; None where this process cannot see it
    (an agent container without the data root mounted): the floor is then not enforced, and logged."""
    root: list[str] = []

    def free() -> int | None:
        try:
            if not root:
                root.append(str(runtime.info().get("DockerRootDir") or "/var/lib/docker"))
            return shutil.disk_usage(root[0]).free
        except (OSError, ContainerError) as exc:
            log.debug("free disk of the Docker data root unknown: %s", exc)
            return None

    return free


class Reporting:
    """A runtime whose pulls report their bytes (dockerd's Downloading events) as they go."""

    def __init__(self, runtime: ImageRuntime, report: Callable[[int, int], None]) -> None:
        self.runtime = runtime
        self.report = report

    def image_id(self, image: str) -> str | None:
        return self.runtime.image_id(image)

    def image_env(self, image: str) -> list[str]:
        return self.runtime.image_env(image)

    def image_digests(self, image: str) -> frozenset[str]:
        return self.runtime.image_digests(image)

    def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]:
        layers: dict[str, tuple[int, int]] = {}
        events = self.runtime.pull(image, stall_timeout_s)
        try:
            for event in events:
                detail = event.get("progressDetail") or {}
                if event.get("status") == "Downloading" and isinstance(detail, dict) and event.get("id"):
                    layers[str(event["id"])] = (int(detail.get("current") or 0), int(detail.get("total") or 0))
                    self.report(sum(d for d, _ in layers.values()), sum(t for _, t in layers.values()))
                elif event.get("status") == "Download complete" and event.get("id") in layers:
                    total = layers[str(event["id"])][1]
                    layers[str(event["id"])] = (total, total)
                    self.report(sum(d for d, _ in layers.values()), sum(t for _, t in layers.values()))
                yield event
        finally:
            events.close()


class ImageCache:
    """The images and requirements volumes of one host's jobs (one per worker)."""

    def __init__(
        self,
        settings: Settings,
        use: ImageUse,
        runtime: CacheRuntime,
        *,
        free_bytes: Callable[[], int | None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.use = use
        self.runtime = runtime
        self.free_bytes = free_bytes or free_bytes_of(runtime)
        self.sleep = sleep
        self.clock = clock

    @property
    def host(self) -> str:
        return self.settings.node_name

    def kept(self) -> set[str]:
        """Images never collected: the defaults and the pre-pull list."""
        return {self.settings.job_image, self.settings.gpu_image(), *self.settings.prepull}

    # Pulling ------------------------------------------------------------------------------------

    def obtain(self, job_id: str, image: str, should_stop: Callable[[], bool] = lambda: False) -> str:
        """The local ID of the job's ``image``, pulled (as a visible phase, with retries) when absent."""
        found = self.runtime.image_id(image)
        if found is None:
            found = self._pull(job_id, image, should_stop)
        self.use.touch_image(self.host, image, now_ms())
        return found

    def _pull(self, job_id: str, image: str, should_stop: Callable[[], bool]) -> str:
        self.ensure_floor()
        delay = PULL_BACKOFF_S
        try:
            for attempt in range(1, PULL_ATTEMPTS + 1):
                self.use.set_pull(job_id, PullPhase(image, 0, 0, attempt))
                try:
                    return ensure_image(self._reporting(job_id, image, attempt), image, self.settings.pull_timeout)
                except ImageUnavailable as exc:
                    final = exc.reason != Reason.IMAGE_PULL_FAILED or any(p in str(exc).lower() for p in PERMANENT)
                    if final or attempt == PULL_ATTEMPTS or should_stop():
                        if attempt > 1:
                            raise ImageUnavailable(f"{exc} (after {attempt} attempts)", reason=exc.reason) from None
                        raise
                    log.warning("job %s: %s; trying again in %.0f s (attempt %d of %d)", job_id, exc, delay,
                                attempt + 1, PULL_ATTEMPTS)  # fmt: skip
                    self.sleep(delay)
                    delay *= 2
        finally:
            self.use.end_pull(job_id)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _reporting(self, job_id: str, image: str, attempt: int) -> Reporting:
        last = [float("-inf")]  # the first bytes are written at once

        def report(done: int, total: int) -> None:
            if self.clock() - last[0] >= PHASE_EVERY_S or (total and done >= total):
                last[0] = self.clock()
                self.use.set_pull(job_id, PullPhase(image, done, total, attempt))

        return Reporting(self.runtime, report)

    def prepull(self) -> list[str]:
        """Pull HN_PREPULL's images that are not here (at a worker's start); the ones that failed."""
        failed = []
        for image in self.settings.prepull:
            try:
                if self.runtime.image_id(image) is None:
                    log.info("pre-pulling %s (HN_PREPULL)", image)
                    self._pull(f"prepull-{image}", image, lambda: False)
            except (ImageUnavailable, ContainerError, JobRejected) as exc:
                log.warning("HN_PREPULL %s not pulled: %s", image, exc)
                failed.append(image)
        return failed

    # The floor ----------------------------------------------------------------------------------

    def used_volume(self, volume: str) -> None:
        self.use.touch_volume(self.host, volume, now_ms())

    def ensure_floor(self) -> None:
        """Collect until the Docker data root has HN_DISK_FLOOR free; JobRejected (disk_full) when it cannot."""
        floor = self.settings.disk_floor_bytes
        free = self.free_bytes() if floor else None
        if free is None or free >= floor:
            return
        removed = self.collect(floor)
        free = self.free_bytes() or 0
        if free < floor:
            raise JobRejected(
                f"the Docker data root has {_gib(free)} free, below HN_DISK_FLOOR ({_gib(floor)}), and nothing "
                f"is left to collect ({len(removed)} removed): free disk space or lower HN_DISK_FLOOR",
                reason=Reason.DISK_FULL,
            )

    def collect(self, floor: int) -> list[str]:
        """Remove least recently used images and volumes until ``floor`` bytes are free; what was removed."""
        removed: list[str] = []
        for kind, name in self.candidates():
            free = self.free_bytes()
            if free is None or free >= floor:
                break
            try:
                if kind == "image":
                    self.runtime.remove_image(name)
                    self.use.forget_image(self.host, name)
                else:
                    self.runtime.remove_volume(name)
                    self.use.forget_volume(self.host, name)
            except ContainerError as exc:  # in use by a container (409), or gone already (404)
                if exc.status_code == 404:
                    (self.use.forget_image if kind == "image" else self.use.forget_volume)(self.host, name)
                log.info("%s %s not collected: %s", kind, name, exc)
                continue
            log.warning("collected %s %s (least recently used) to keep HN_DISK_FLOOR free", kind, name)
            removed.append(name)
        return removed

    def candidates(self) -> Sequence[tuple[str, str]]:
        """(kind, name) of what may be collected, least recently used first."""
        kept = self.kept()
        found = [(at, "image", name) for name, at in self.use.images(self.host) if name not in kept]
        found += [(at, "volume", name) for name, at in self.use.volumes(self.host)]
        return [(kind, name) for _, kind, name in sorted(found)]


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.1f} GiB"
