"""Fakes for the runner's seams (as docker-py's fake_api_client): a container runtime, a store and a clock.

They stand in for Docker and Redis only in unit tests of the runner's decisions (deadline, cancel,
grace then kill, reattach, publish order, recovery), where they make each case take milliseconds;
the same paths run against a real engine and a real Redis in tests/execution/.

Time is the FakeClock's: waiting on a container advances it, so a job that runs for an hour is
over as soon as the runner has waited for it, and nothing here sleeps.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypernode_host.core.jobs import JobState
from hypernode_host.errors import EngineUnreachable, NameTaken
from hypernode_host.state.imagecache import PullPhase
from hypernode_host.state.quarantine import Quarantined
from hypernode_host.state.records import JobRecord
from hypernode_host.tasks.containers import ContainerSpec, ContainerState, PrepSpec

SIGTERM_EXIT, SIGKILL_EXIT = 143, 137


class FakeClock:
    """Epoch seconds that move only when someone waits."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


@dataclass
class Behaviour:
    """What a job's container does once started: prints ``output``, then exits with ``exit_code``
    after ``runs_for_s``; with ``ignores_sigterm`` only SIGKILL (the end of the stop grace) ends it."""

    output: tuple[bytes, ...] = (b"done\n",)
    exit_code: int = 0
    runs_for_s: float = 0.0
    ignores_sigterm: bool = False
    oom_killed: bool = False


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    behaviour: Behaviour
    image: str = "sha256:fake"
    created_at_ms: int = 0
    started_at_ms: int = 0
    finished_at_ms: int = 0
    exit_code: int = 0

    @property
    def running(self) -> bool:
        return bool(self.started_at_ms) and not self.finished_at_ms


class FakeStream:
    """A container's output, as the runtime's OutputStream gives it."""

    def __init__(self, chunks: tuple[bytes, ...]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


class FakeRuntime:
    """The container operations the runner needs, over containers in memory; every call is logged."""

    def __init__(self, clock: FakeClock, events: list[str]) -> None:
        self.clock = clock
        self.events = events
        self.containers: dict[str, FakeContainer] = {}
        self.behaviours: dict[str, Behaviour] = {}  # by container name, for containers yet to be created
        self.failures: dict[str, Exception] = {}  # operation -> the error it raises
        # An engine restart: (seconds after a container starts, seconds the engine is gone, whether
        # live-restore keeps containers running), or None.
        self.outage: tuple[float, float, bool] | None = None
        self._back_at: float | None = None  # while the engine is gone: when it answers again
        self.image_envs: dict[str, list[str]] = {}  # image (id) -> its config's Env
        self._ids = itertools.count(1)

    def _call(self, operation: str, *args: object) -> None:
        self.events.append(" ".join([operation, *map(str, args)]))
        if operation in self.failures:
            raise self.failures[operation]

    def leftover(self, name: str, labels: Mapping[str, str], behaviour: Behaviour, started_s_ago: float | None) -> str:
        """A container a dead worker left: created, and started ``started_s_ago`` (None: never started)."""
        container = self._new(name, labels, behaviour)
        if started_s_ago is not None:
            container.started_at_ms = int((self.clock.now - started_s_ago) * 1000)
        return container.id

    def _new(self, name: str, labels: Mapping[str, str], behaviour: Behaviour) -> FakeContainer:
        container = FakeContainer(
            f"c{next(self._ids):063d}", name, dict(labels), behaviour, created_at_ms=self.clock.ms()
        )
        self.containers[container.id] = container
        return container

    def _exit(self, container: FakeContainer, code: int) -> None:
        container.finished_at_ms, container.exit_code = self.clock.ms(), code

    def _settle(self, container: FakeContainer) -> None:
        """A running container whose time has come exits."""
        if container.running and self.clock.ms() >= container.started_at_ms + container.behaviour.runs_for_s * 1000:
            self._exit(container, container.behaviour.exit_code)

    # ImageRuntime, PrepRuntime, Runtime ------------------------------------------------------------

    def image_id(self, image: str) -> str | None:
        return "sha256:fake"

    def version(self) -> str:
        return "fake-engine"

    def image_env(self, image: str) -> list[str]:
        return list(self.image_envs.get(image, ()))

    def info(self) -> dict[str, Any]:
        return {"DockerRootDir": "/"}

    def remove_image(self, image: str) -> None:
        self._call("remove_image", image)

    def remove_volume(self, name: str) -> None:
        self._call("remove_volume", name)

    def image_digests(self, image: str) -> frozenset[str]:
        return frozenset({"sha256:fake", "sha256:" + "fa" * 32})

    def pull(self, image: str, stall_timeout_s: float) -> Iterator[dict[str, Any]]:
        raise AssertionError("the fake runtime has every image")

    def find(self, name: str) -> str | None:
        return next((c.id for c in self.containers.values() if c.name == name), None)

    def create(self, spec: ContainerSpec) -> str:
        self._call("create", spec.name)
        if self.find(spec.name) is not None:
            raise NameTaken(f"container {spec.name} exists already")
        return self._new(spec.name, spec.labels, self.behaviours.get(spec.name, Behaviour())).id

    def attach(self, container_id: str) -> FakeStream:
        self._call("attach")
        return FakeStream(self.containers[container_id].behaviour.output)

    def logs(self, container_id: str) -> FakeStream:
        self._call("logs")
        return FakeStream(self.containers[container_id].behaviour.output)

    def start(self, container_id: str) -> None:
        self._call("start")
        self.containers[container_id].started_at_ms = self.clock.ms()

    def reachable(self) -> bool:
        if self._back_at is not None and self.clock.now >= self._back_at:
            self._back_at = None
        return self._back_at is None

    def wait(self, container_id: str, timeout_s: float) -> bool:
        """Advance the clock until the container exits, or by ``timeout_s``; True when it has exited."""
        if not self.reachable():
            raise EngineUnreachable("the Docker engine stopped answering", container=container_id)
        container = self.containers.get(container_id)
        if container is None or not container.running:
            return True
        if self.outage is not None:
            after_s, for_s, live_restore = self.outage
            at = container.started_at_ms / 1000 + after_s
            if self.clock.now + timeout_s >= at:
                self.clock.now, self.outage, self._back_at = max(at, self.clock.now), None, at + for_s
                if not live_restore:  # stopping, the engine stops its containers
                    self._exit(container, SIGKILL_EXIT)
                raise EngineUnreachable("the Docker engine stopped answering", container=container_id)
        left_s = container.started_at_ms / 1000 + container.behaviour.runs_for_s - self.clock.now
        self.clock.now += max(min(timeout_s, left_s), 0)
        self._settle(container)
        return not container.running

    def stop(self, container_id: str, grace_s: int) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (what docker stop does)."""
        self._call("stop", grace_s)
        container = self.containers[container_id]
        if not container.running:
            return
        if container.behaviour.ignores_sigterm:
            self.clock.now += grace_s
            self._exit(container, SIGKILL_EXIT)
        else:
            self._exit(container, SIGTERM_EXIT)

    def kill(self, container_id: str) -> None:
        self._call("kill")
        container = self.containers[container_id]
        if container.running:
            self._exit(container, SIGKILL_EXIT)

    def state(self, container_id: str) -> ContainerState:
        container = self.containers[container_id]
        self._settle(container)
        return ContainerState(
            running=container.running,
            exit_code=container.exit_code,
            oom_killed=container.behaviour.oom_killed,
            started_at_ms=container.started_at_ms,
            finished_at_ms=container.finished_at_ms,
            image_id=container.image,
            created_at_ms=container.created_at_ms,
            labels=dict(container.labels),
        )

    def remove(self, container_id: str) -> None:
        assert container_id, "docker-py raises NullResource for a remove without an id"
        self._call("remove")
        self.containers.pop(container_id, None)

    def labelled(self, label: str, value: str | None = None) -> list[tuple[str, dict[str, str]]]:
        return [
            (c.id, dict(c.labels))
            for c in self.containers.values()
            if label in c.labels and (value is None or c.labels[label] == value)
        ]

    # The requirements step (unused by these jobs) -----------------------------------------------

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        raise AssertionError("no requirements here")

    def volume_created(self, name: str) -> str | None:
        raise AssertionError("no requirements here")

    def create_prep(self, spec: PrepSpec) -> str:
        raise AssertionError("no requirements here")

    def has_file(self, container_id: str, path: str) -> bool:
        raise AssertionError("no requirements here")

    def output_tail(self, container_id: str, lines: int) -> bytes:
        raise AssertionError("no requirements here")


# The store ----------------------------------------------------------------------------------------


class FakeJobs:
    """Job records as flat string hashes, read back through the real JobRecord, as state/jobs.py does."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.hashes: dict[str, dict[str, str]] = {}
        self.live_holders: set[tuple[str, str]] = set()  # (host, slot) of workers whose registration exists

    def record(self, job_id: str, job: Mapping[str, Any], queue: str) -> None:
        self.hashes[job_id] = {"id": job_id, "job": json.dumps(dict(job)), "state": "queued", "queue": queue}
        self.hashes[job_id] |= {"attempt": "0", "received_at": "1"}

    def get(self, job_id: str) -> JobRecord | None:
        fields = self.hashes.get(job_id)
        return JobRecord.parse(job_id, fields) if fields else None

    def claim(self, job_id: str, host: str, slot: int, container: str) -> int:
        """claim.lua's rule: a finished job is 0; one a live worker of another slot holds is -1."""
        fields = self.hashes.get(job_id, {})
        if fields.get("state") not in (JobState.QUEUED, JobState.RUNNING):
            return 0
        holder = (fields.get("host", ""), fields.get("slot", ""))
        if fields["state"] == JobState.RUNNING and holder != (host, str(slot)) and holder in self.live_holders:
            return -1
        attempt = int(fields.get("attempt", "0")) + 1
        fields |= {"state": "running", "host": host, "slot": str(slot), "container": container, "attempt": str(attempt)}
        return attempt

    def set_progress(self, job_id: str, progress: Mapping[str, Any]) -> None:
        self.events.append(f"progress {progress['percent']:g}")

    def keep_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        self.events.append("keep_result")
        self.hashes[job_id]["pending_result"] = json.dumps(dict(result))

    def finish(self, job_id: str, result: Mapping[str, Any], **_: Any) -> bool:
        self.events.append("finish")
        fields = self.hashes[job_id]
        if fields["state"] in (JobState.FINISHED, JobState.REPORTED):
            return False
        fields.pop("pending_result", None)
        fields |= {"state": "finished", "status": str(result["status"]), "result": json.dumps(dict(result))}
        return True

    def running(self, host: str | None = None, slot: int | None = None) -> list[str]:
        return sorted(
            job_id
            for job_id, f in self.hashes.items()
            if f["state"] == JobState.RUNNING
            and (host is None or f.get("host") == host)
            and (slot is None or f.get("slot") == str(slot))
        )


@dataclass
class FakeCancels:
    flags: set[str] = field(default_factory=set)
    # Checks to answer "no" before a flag counts: a cancel that arrives while the job runs.
    after_checks: dict[str, int] = field(default_factory=dict)

    def request(self, job_id: str) -> None:
        self.flags.add(job_id)

    def requested(self, job_id: str) -> bool:
        if self.after_checks.get(job_id, 0) > 0:
            self.after_checks[job_id] -= 1
            return False
        return job_id in self.flags


NODE_IDENTITY = "0123456789ab"


class FakeNode:
    def node_id(self) -> str | None:
        return "node-1"

    def identity(self) -> str:
        return NODE_IDENTITY


class FakeQuarantine:
    """The breaker's quarantine (state/quarantine.py) in memory, with a TTL that never runs out."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], Quarantined] = {}

    def add(self, host: str, workload: str, *, job_id: str, gpu: str, reason: str, at_ms: int, ttl_s: int) -> None:
        self.held[(host, workload)] = Quarantined(workload, job_id, gpu, reason, at_ms, ttl_s)

    def get(self, host: str, workload: str) -> Quarantined | None:
        return self.held.get((host, workload))

    def clear(self, host: str) -> int:
        gone = [key for key in self.held if key[0] == host]
        for key in gone:
            del self.held[key]
        return len(gone)


class FakeImageUse:
    """The image cache's records (state/imagecache.py) in memory."""

    def __init__(self) -> None:
        self.image_use: dict[str, int] = {}
        self.volume_use: dict[str, int] = {}
        self.phases: dict[str, list[PullPhase]] = {}  # job id -> every phase written, in order
        self.ended: list[str] = []

    def touch_image(self, host: str, image: str, at_ms: int) -> None:
        self.image_use[image] = at_ms

    def touch_volume(self, host: str, volume: str, at_ms: int) -> None:
        self.volume_use[volume] = at_ms

    def images(self, host: str) -> list[tuple[str, int]]:
        return sorted(self.image_use.items(), key=lambda item: item[1])

    def volumes(self, host: str) -> list[tuple[str, int]]:
        return sorted(self.volume_use.items(), key=lambda item: item[1])

    def forget_image(self, host: str, image: str) -> None:
        self.image_use.pop(image, None)

    def forget_volume(self, host: str, volume: str) -> None:
        self.volume_use.pop(volume, None)

    def set_pull(self, job_id: str, phase: PullPhase) -> None:
        self.phases.setdefault(job_id, []).append(phase)

    def end_pull(self, job_id: str) -> None:
        self.ended.append(job_id)


class FakeStore:
    """What the runner and the recovery use of the Store."""

    def __init__(self, events: list[str]) -> None:
        self.jobs = FakeJobs(events)
        self.cancels = FakeCancels()
        self.node = FakeNode()
        self.quarantine = FakeQuarantine()
        self.images = FakeImageUse()
