"""The image cache on fakes: a pull retried with backoff then image_pull_failed, its bytes as a phase,
least-recently-used collection to keep HN_DISK_FLOOR free (never the defaults or HN_PREPULL), disk_full."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from fakes import FakeImageUse

from hypernode_host.errors import ContainerError, ImageUnavailable, JobRejected
from hypernode_host.settings import Settings
from hypernode_host.tasks.imagecache import PULL_ATTEMPTS, ImageCache

GIB = 1 << 30
SETTINGS = Settings.from_env(
    {"HN_NODE_NAME": "rig", "HN_JOB_IMAGE": "base", "HN_PREPULL": "kept-too", "HN_DISK_FLOOR": "10g"}
)


class Engine:
    """Images, their sizes and a disk: pulls fail ``failures`` times, then land."""

    def __init__(self, free: int = 50 * GIB, failures: int = 0) -> None:
        self.free = free
        self.failures = failures
        self.local: dict[str, int] = {}  # image -> bytes on disk
        self.in_use: set[str] = set()
        self.pulls = 0
        self.removed: list[str] = []

    def image_id(self, image: str) -> str | None:
        return f"sha256:{image}" if image in self.local else None

    def image_env(self, image: str) -> list[str]:
        return []

    def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]:
        self.pulls += 1
        if self.failures:
            self.failures -= 1
            yield {"error": "toomanyrequests: rate limited"}
            return
        for done in (100 << 20, 300 << 20):
            yield {"status": "Downloading", "id": "layer", "progressDetail": {"current": done, "total": 300 << 20}}
        self.local[image] = 300 << 20
        self.free -= 300 << 20

    def info(self) -> dict[str, Any]:
        return {"DockerRootDir": "/"}

    def remove_image(self, image: str) -> None:
        if image in self.in_use:
            raise ContainerError(f"cannot remove image {image}: conflict", status_code=409)
        self.free += self.local.pop(image, 0) or GIB
        self.removed.append(image)

    def remove_volume(self, name: str) -> None:
        self.free += GIB
        self.removed.append(name)


def cache(engine: Engine, use: FakeImageUse | None = None) -> tuple[ImageCache, FakeImageUse, list[float]]:
    use = use or FakeImageUse()
    slept: list[float] = []
    ticks = iter(range(10_000))
    image_cache = ImageCache(
        SETTINGS, use, engine, free_bytes=lambda: engine.free, sleep=slept.append, clock=lambda: float(next(ticks))
    )  # type: ignore[arg-type]
    return image_cache, use, slept


def test_a_pull_is_a_phase_with_bytes_and_percent_and_the_image_is_remembered() -> None:
    engine = Engine()
    image_cache, use, _ = cache(engine)

    assert image_cache.obtain("j1", "py:3.12") == "sha256:py:3.12"

    phases = use.phases["j1"]
    assert phases[0].describe() == "pulling py:3.12: starting"
    assert phases[-1].describe() == "pulling py:3.12: 100% (300 of 300 MiB)"
    assert any(p.percent == 33 for p in phases)
    assert use.ended == ["j1"] and "py:3.12" in use.image_use
    assert image_cache.obtain("j2", "py:3.12") == "sha256:py:3.12" and engine.pulls == 1  # present: no pull


def test_a_failed_pull_is_retried_with_backoff_then_fails_the_job() -> None:
    engine = Engine(failures=2)
    image_cache, use, slept = cache(engine)
    assert image_cache.obtain("j1", "py:3.12") == "sha256:py:3.12"
    assert slept == [2.0, 4.0] and [p.attempt for p in use.phases["j1"]][-1] == 3
    assert use.phases["j1"][-1].describe().startswith("pulling py:3.12 (attempt 3): ")

    engine = Engine(failures=PULL_ATTEMPTS)
    image_cache, use, slept = cache(engine)
    with pytest.raises(ImageUnavailable, match=r"rate limited \(after 3 attempts\)$") as raised:
        image_cache.obtain("j2", "py:3.12")
    assert raised.value.reason == "image_pull_failed" and engine.pulls == 3 and use.ended == ["j2"]


def test_the_floor_collects_least_recently_used_first_never_defaults_prepull_or_images_in_use() -> None:
    engine = Engine(free=8 * GIB)  # below the 10 GiB floor
    use = FakeImageUse()
    for at, image in enumerate(["base", "kept-too", "old", "busy", "newer", "newest"]):
        use.touch_image("rig", image, at)
        engine.local[image] = GIB
    use.touch_volume("rig", "hn-req-1", 3)  # between busy and newer
    engine.in_use.add("busy")
    image_cache, _, _ = cache(engine, use)

    image_cache.ensure_floor()

    assert engine.removed == ["old", "hn-req-1"]  # busy skipped (a container uses it); 10 GiB free: stop
    assert engine.free == 10 * GIB
    assert {"base", "kept-too", "busy", "newer", "newest"} <= set(use.image_use)


def test_below_the_floor_with_nothing_to_collect_jobs_are_refused_disk_full() -> None:
    engine = Engine(free=2 * GIB)
    image_cache, use, _ = cache(engine)
    use.touch_image("rig", "base", 1)

    with pytest.raises(JobRejected) as refused:
        image_cache.ensure_floor()

    assert refused.value.reason == "disk_full"
    assert str(refused.value) == (
        "the Docker data root has 2.0 GiB free, below HN_DISK_FLOOR (10.0 GiB), and nothing is left to collect "
        "(0 removed): free disk space or lower HN_DISK_FLOOR"
    )
    assert engine.removed == []


def test_prepull_pulls_the_missing_images_of_the_list() -> None:
    engine = Engine()
    engine.local["kept-too"] = GIB
    image_cache, _, _ = cache(engine)
    assert image_cache.prepull() == [] and engine.pulls == 0
    engine.local.clear()
    assert image_cache.prepull() == [] and engine.pulls == 1 and "kept-too" in engine.local


def test_an_image_the_registry_does_not_have_is_not_tried_again() -> None:
    class Missing(Engine):
        def pull(self, image: str, stall_timeout_s: float) -> Generator[dict[str, Any], None, None]:
            self.pulls += 1
            yield {"error": "manifest for py:9 not found: manifest unknown"}

    engine = Missing()
    image_cache, _, slept = cache(engine)
    with pytest.raises(ImageUnavailable, match=r"manifest unknown$"):
        image_cache.obtain("j1", "py:9")
    assert slept == [] and engine.pulls == 1
