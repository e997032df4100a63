"""Pulling a missing image: its progress in a few log lines, its deadline, its reasons."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from hypernode_host.errors import ImageUnavailable
from hypernode_host.tasks.images import PullProgress, ensure_image


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Registry:
    """An image runtime whose pull replays ``events``, advancing the clock by ``step`` per event."""

    def __init__(self, events: list[dict[str, Any]], clock: Clock, step: float = 0.0, lands: bool = True) -> None:
        self.events = events
        self.clock = clock
        self.step = step
        self.lands = lands
        self.pulled = False
        self.closed = False

    def image_id(self, image: str) -> str | None:
        return "sha256:pulled" if self.pulled and self.lands else None

    def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]:
        try:
            for event in self.events:
                self.clock.now += self.step
                yield event
            self.pulled = True
        finally:
            self.closed = True


def downloading(layer: str, current: int, total: int) -> dict[str, Any]:
    return {"status": "Downloading", "id": layer, "progressDetail": {"current": current, "total": total}}


def test_progress_logs_milestones_and_bytes_every_few_seconds() -> None:
    clock = Clock()
    progress = PullProgress("img", clock)

    assert progress.line({"status": "Pulling from hn/img", "id": "1"}) == "pulling img: 1: Pulling from hn/img"
    assert progress.line(downloading("a", 1 << 20, 8 << 20)) is None  # too soon for a byte count
    clock.now += 6
    assert progress.line(downloading("b", 2 << 20, 4 << 20)) == "pulling img: 3 of 12 MiB downloaded"
    assert progress.line(downloading("b", 3 << 20, 4 << 20)) is None
    assert progress.line({"status": "Pull complete", "id": "b"}) == "pulling img: b: Pull complete"
    assert progress.line({}) is None


def test_a_present_image_is_not_pulled() -> None:
    registry = Registry([], Clock())
    registry.pulled = True

    assert ensure_image(registry, "img", 10) == "sha256:pulled"
    assert not registry.closed  # never asked to pull


def test_a_missing_image_is_pulled_and_its_id_returned() -> None:
    clock = Clock()
    registry = Registry([{"status": "Pulling fs layer", "id": "a"}, {"status": "Pull complete", "id": "a"}], clock)

    assert ensure_image(registry, "img", 10, clock) == "sha256:pulled"
    assert registry.closed


def test_an_error_event_is_the_reason() -> None:
    clock = Clock()
    registry = Registry([{"error": "manifest for img not found: manifest unknown\nmore"}], clock)

    with pytest.raises(ImageUnavailable, match=r"^image img is not available: manifest for img not found"):
        ensure_image(registry, "img", 10, clock)
    assert registry.closed


def test_a_pull_past_its_deadline_is_abandoned() -> None:
    clock = Clock()
    registry = Registry([downloading("a", i, 100) for i in range(100)], clock, step=1.0)

    with pytest.raises(ImageUnavailable, match="the pull took over 10 s"):
        ensure_image(registry, "img", 10, clock)
    assert registry.closed and not registry.pulled  # the stream was dropped mid-pull


def test_a_pull_that_ends_without_the_image_is_an_error() -> None:
    clock = Clock()
    with pytest.raises(ImageUnavailable, match="the pull ended without it"):
        ensure_image(Registry([], clock, lands=False), "img", 10, clock)
