"""The image a job runs: the local one, or pulled within HN_PULL_TIMEOUT with its progress in the log.

Admission has already checked the name against the allow-list (before any Docker call); here
the image is resolved to the ID that ends up in the result and, when only digest-pinned entries
allow it, checked to be one of those images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

from hypernode_host.core.jobs import Reason
from hypernode_host.errors import ImageUnavailable, JobRejected

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0  # byte counts at most this often: a pull must not flood the worker's log
_TICKS = frozenset({"Downloading", "Extracting", "Waiting", "Verifying Checksum"})


class ImageRuntime(Protocol):
    def image_id(self, image: str) -> str | None: ...
    def image_env(self, image: str) -> list[str]: ...
    def image_digests(self, image: str) -> frozenset[str]: ...
    def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]: ...


class PullProgress:
    """Turns dockerd's pull events into a few log lines: milestones as they come, bytes every few seconds."""

    def __init__(self, image: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.image = image
        self.clock = clock
        self._layers: dict[str, tuple[int, int]] = {}  # layer id → (bytes done, bytes total)
        self._last = clock()

    def line(self, event: dict[str, Any]) -> str | None:
        """The log line this event deserves, if any."""
        status = str(event.get("status", ""))
        layer = str(event.get("id", ""))
        if status not in _TICKS:
            return f"pulling {self.image}: {f'{layer}: ' if layer else ''}{status}" if status else None
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and isinstance(detail, dict) and layer:
            self._layers[layer] = (int(detail.get("current") or 0), int(detail.get("total") or 0))
        if self.clock() - self._last < PROGRESS_EVERY_S or not self._layers:
            return None
        self._last = self.clock()
        done = sum(d for d, _ in self._layers.values()) >> 20
        total = sum(t for _, t in self._layers.values()) >> 20
        return f"pulling {self.image}: {done} of {total} MiB downloaded"


def ensure_image(
    runtime: ImageRuntime, image: str, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> str:
    """The local ID of ``image``, pulling it first when it is absent; ImageUnavailable when that fails."""
    found = runtime.image_id(image)
    if found is not None:
        return found
    log.info("image %s is not here: pulling it (at most %.0f s)", image, timeout_s)
    deadline = clock() + timeout_s
    progress = PullProgress(image, clock)
    events = runtime.pull(image, stall_timeout_s=timeout_s)
    try:
        for event in events:
            if "error" in event:
                reason = str(event["error"]).splitlines()[0][:200] if event["error"] else "unknown error"
                raise ImageUnavailable(f"image {image} is not available: {reason}")
            text = progress.line(event)
            if text:
                log.info("%s", text)
            if clock() > deadline:
                raise ImageUnavailable(
                    f"image {image} is not available: the pull took over {timeout_s:.0f} s", reason="image_pull_timeout"
                )
    finally:
        events.close()  # past the deadline: dropping the connection makes dockerd abandon the pull
    found = runtime.image_id(image)
    if found is None:
        raise ImageUnavailable(f"image {image} is not available: the pull ended without it")
    log.info("pulled %s: %s", image, found)
    return found


def check_pinned(runtime: ImageRuntime, image: str, image_id: str, digests: Sequence[str]) -> None:
    """JobRejected (image_not_allowed) unless the local image is one that ``digests`` pin: a registry
    digest it was pulled by (RepoDigests) or its image ID. Nothing to check without pins."""
    if not digests:
        return
    held = runtime.image_digests(image_id)
    if held.isdisjoint(digests):
        pins = ", ".join(d[:19] for d in digests)
        raise JobRejected(
            f"image {image!r} is not the one this node pins ({pins}…): it is {image_id[:19]}…",
            reason=Reason.IMAGE_NOT_ALLOWED,
        )
