"""The image cache on a real engine and a real Redis: the images jobs used are collected least recently
used first to keep HN_DISK_FLOOR free, never the default image; with nothing left, jobs end disk_full.

The free space of this machine's disk cannot be set, so the floor is set above it (1 PiB): then every
job collects all it may, and is refused.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from rich.console import Console

from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.inspect import job_detail, recent_jobs
from hypernode_host.ops.views import jobs_table
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.state.imagecache import PullPhase
from hypernode_host.tasks.containers import DockerRuntime
from hypernode_host.tasks.runner import JobRunner
from support import TEST_IMAGE


def tag(name: str) -> str:
    """A throwaway image: TEST_IMAGE with one more label (a local build, no network)."""
    dockerfile = f"FROM {TEST_IMAGE}\nLABEL hypernode.test.cache={name}\n"
    done = subprocess.run(["docker", "build", "-q", "-t", name, "-"], input=dockerfile, text=True,
                          capture_output=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return name


@pytest.fixture
def images(docker_runtime: DockerRuntime) -> Iterator[list[str]]:
    suffix = secrets.token_hex(4)
    built = [tag(f"hn-test/cache-{n}:{suffix}") for n in ("old", "new")]
    yield built
    for image in built:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)


def runner(settings: Settings, store: Store, runtime: DockerRuntime) -> JobRunner:
    slots = plan_slots([], 1)
    return JobRunner(settings, store, runtime, NodeKey.generate(), slots[0], slots)


def run(runner: JobRunner, store: Store, image: str) -> dict[str, object]:
    job_id = f"c-{secrets.token_hex(6)}"
    job = {"id": job_id, "command": "echo ran", "image": image, "memoryLimit": "64m", "cpuLimit": 0.5}
    assert store.jobs.record(job_id, job, CPU_QUEUE)
    runner.run(job_id)
    record = store.jobs.get(job_id)
    assert record is not None and record.done, record
    return record.result()


def test_images_jobs_used_are_collected_oldest_first_then_jobs_end_disk_full(
    docker_runtime: DockerRuntime, redis_server: RedisProcess, images: list[str]
) -> None:
    env = {"HN_JOB_IMAGE": TEST_IMAGE, "HN_NODE_NAME": f"test-{secrets.token_hex(4)}", "HN_ALLOWED_IMAGES": "hn-test/*"}
    store = Store.from_url(redis_server.url)
    try:
        roomy = runner(Settings.from_env({**env, "HN_DISK_FLOOR": "0"}), store, docker_runtime)
        assert [run(roomy, store, image)["status"] for image in [*images, TEST_IMAGE]] == ["completed"] * 3
        assert [name for name, _ in store.images.images(env["HN_NODE_NAME"])] == [*images, TEST_IMAGE]

        full = runner(Settings.from_env({**env, "HN_DISK_FLOOR": "1024t"}), store, docker_runtime)
        refused = run(full, store, TEST_IMAGE)

        assert (refused["status"], refused["reason"]) == ("error", "disk_full")
        assert str(refused["logs"]).endswith(
            "and nothing is left to collect (2 removed): free disk space or lower HN_DISK_FLOOR"
        )
        assert [docker_runtime.image_id(image) for image in images] == [None, None]  # collected
        assert docker_runtime.image_id(TEST_IMAGE) is not None  # the default image is kept
        assert [name for name, _ in store.images.images(env["HN_NODE_NAME"])] == [TEST_IMAGE]
    finally:
        store.close()


def test_a_running_jobs_pull_shows_in_jobs_job_and_top(redis_server: RedisProcess) -> None:
    store = Store.from_url(redis_server.url)
    try:
        job_id = f"p-{secrets.token_hex(6)}"
        assert store.jobs.record(job_id, {"id": job_id, "command": "true"}, CPU_QUEUE)
        assert store.jobs.claim(job_id, "rig", 0, f"hn-job-{job_id}") == 1
        store.images.set_pull(job_id, PullPhase("python:3.12", 120 << 20, 300 << 20, 2))

        [row] = recent_jobs(store, plan_slots([], 1))
        shown = "pulling python:3.12 (attempt 2): 40% (120 of 300 MiB)"
        assert (row.state, row.pull) == ("running", shown)
        assert job_detail(store, job_id).pull == shown
        console = Console(width=240, record=True)
        console.print(jobs_table([row], 0))
        assert f"running ({shown})" in console.export_text()

        store.images.end_pull(job_id)
        assert recent_jobs(store, plan_slots([], 1))[0].pull is None
    finally:
        store.close()
