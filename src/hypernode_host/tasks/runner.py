"""Run one job in its container, from the job record to a signed result in the outbox.

create → put script → start → wait in slices (deadline, cancel) → stop(grace) → kill →
exit code and OOMKilled → logs → result stored → container removed. The worker enforces
the deadline itself: Dramatiq's TimeLimit cannot interrupt a blocking Docker call.
A message delivered twice finds the record finished, or the named container, and never
starts a second container for the same job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hypernode_host import constants as C
from hypernode_host.admission import admit
from hypernode_host.errors import ContainerError, JobRejected
from hypernode_host.gpu.models import Slot
from hypernode_host.jobs import JobSpec, JobState, Status
from hypernode_host.proofs import NodeKey
from hypernode_host.results import error_result, make_result
from hypernode_host.settings import Settings
from hypernode_host.store import Store, now_ms
from hypernode_host.tasks.containers import ContainerSpec, ContainerState
from hypernode_host.tasks.logcapture import CapturedLogs, LogCapture

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """The container operations the runner needs (DockerRuntime in production)."""

    def ensure_image(self, image: str, pull_timeout_s: float = ...) -> str: ...
    def find(self, name: str) -> str | None: ...
    def create(self, spec: ContainerSpec) -> str: ...
    def start(self, container_id: str) -> None: ...
    def wait(self, container_id: str, timeout_s: float) -> bool: ...
    def logs(self, container_id: str) -> Any: ...
    def state(self, container_id: str) -> ContainerState: ...
    def stop(self, container_id: str, grace_s: int) -> None: ...
    def kill(self, container_id: str) -> None: ...
    def remove(self, container_id: str) -> None: ...


def container_name(job_id: str) -> str:
    """Deterministic, so Docker's unique names make a second container for a job impossible."""
    return f"hn-job-{job_id}"


def command_for(spec: JobSpec) -> list[str]:
    if spec.script is not None:
        return ["python", C.SCRIPT_PATH]
    if isinstance(spec.command, list):
        return list(spec.command)
    return ["sh", "-c", str(spec.command)]


@dataclass
class Outcome:
    status: Status
    exit_code: int
    oom_killed: bool
    logs: CapturedLogs
    started_at: int
    completed_at: int
    image_id: str


class LogFollower:
    """Streams a container's output into a bounded LogCapture on its own thread."""

    def __init__(self, runtime: Runtime, container_id: str, max_chars: int) -> None:
        self.capture = LogCapture(max_chars)
        self.error: str | None = None
        self._thread = threading.Thread(
            target=self._follow, args=(runtime, container_id), name=f"logs-{container_id[:12]}", daemon=True
        )
        self._thread.start()

    def _follow(self, runtime: Runtime, container_id: str) -> None:
        try:
            for chunk in runtime.logs(container_id):
                self.capture.feed(chunk)
        except ContainerError as exc:
            self.error = str(exc)

    def finish(self, timeout_s: float = 10.0) -> CapturedLogs:
        self._thread.join(timeout_s)
        if self.error:
            log.warning("log stream ended early: %s", self.error)
        return self.capture.result()


class JobRunner:
    """Runs the jobs of one worker slot."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime,
        key: NodeKey,
        slot: Slot,
        slots: list[Slot],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.key = key
        self.slot = slot
        self.slots = slots
        self.clock = clock

    def run(self, job_id: str) -> None:
        """Run (or reattach to) the job and store exactly one result for it."""
        record = self.store.job(job_id)
        if record is None:
            log.warning("job %s: no record in Redis; message dropped", job_id)
            return
        if record.get("state") in (JobState.FINISHED, JobState.REPORTED):
            log.info("job %s: already finished; duplicate delivery ignored", job_id)
            return
        job = json.loads(record["job"])
        name = container_name(job_id)
        try:
            outcome = self._run(job_id, job, name)
        except (JobRejected, ContainerError) as exc:
            log.warning("job %s: %s", job_id, exc)
            result = error_result(
                job_id=job_id,
                job=job,
                node_id=self.store.node_id(),
                key=self.key,
                reason=str(exc),
                at_ms=now_ms(),
            )
            self.store.finish_job(job_id, result.model_dump(mode="json"))
            self._remove(name)
            return
        result = make_result(
            job_id=job_id,
            job=job,
            node_id=self.store.node_id(),
            key=self.key,
            status=outcome.status,
            exit_code=outcome.exit_code,
            logs=outcome.logs,
            started_at=outcome.started_at,
            completed_at=outcome.completed_at,
            image=outcome.image_id,
            oom_killed=outcome.oom_killed,
        )
        self.store.finish_job(job_id, result.model_dump(mode="json"))
        log.info(
            "job %s: %s (exit %s, %d ms) on %s",
            job_id,
            outcome.status.value,
            outcome.exit_code,
            outcome.completed_at - outcome.started_at,
            self.slot.describe(),
        )
        self._remove(name)  # only now: the result is safe in the outbox

    def _run(self, job_id: str, job: dict[str, Any], name: str) -> Outcome:
        spec = JobSpec.parse(job)
        admission = admit(spec, self.settings, self.slots)
        if self.store.cancel_requested(job_id):
            at = now_ms()
            empty = LogCapture(self.settings.max_log_size).result()
            return Outcome(Status.CANCELLED, -1, False, empty, at, at, "")
        container_id = self._container(job_id, spec, admission.image, name)
        follower = LogFollower(self.runtime, container_id, self.settings.max_log_size)
        status = self._wait(job_id, container_id, admission.timeout_s)
        state = self.runtime.state(container_id)
        logs = follower.finish()
        if status is None:
            status = Status.COMPLETED if state.exit_code == 0 else Status.FAILED
        return Outcome(
            status=status,
            exit_code=state.exit_code,
            oom_killed=state.oom_killed,
            logs=logs,
            started_at=state.started_at_ms,
            completed_at=state.finished_at_ms or now_ms(),
            image_id=state.image_id,
        )

    def _container(self, job_id: str, spec: JobSpec, image: str, name: str) -> str:
        """The job's running (or exited) container: reattached if it exists, else created and started."""
        existing = self.runtime.find(name)
        if existing is not None:
            state = self.runtime.state(existing)
            if state.started_at_ms:
                log.info("job %s: reattaching to container %s", job_id, existing[:12])
                self.store.begin_attempt(job_id, self.slot.id, name)
                return existing
            self.runtime.remove(existing)  # created but never started: its files may be missing
        image_id = self.runtime.ensure_image(image)
        attempt = self.store.begin_attempt(job_id, self.slot.id, name)
        container_id = self.runtime.create(self._spec(job_id, spec, image_id, name, attempt))
        self.runtime.start(container_id)
        return container_id

    def _spec(self, job_id: str, spec: JobSpec, image_id: str, name: str, attempt: int) -> ContainerSpec:
        files = {"script.py": spec.script.encode()} if spec.script is not None else {}
        uuids = self.slot.gpu_uuids[: spec.gpus] if spec.gpus else ()
        return ContainerSpec(
            name=name,
            image=image_id,
            command=command_for(spec),
            env={**spec.env, "JOB_ID": job_id},
            labels={
                C.LABEL_JOB: job_id,
                C.LABEL_NODE: self.settings.node_name,
                C.LABEL_WORKER: str(self.slot.id),
                C.LABEL_ATTEMPT: str(attempt),
                C.LABEL_GPUS: ",".join(uuids),
            },
            memory_bytes=spec.memory_bytes,
            nano_cpus=int(spec.cpuLimit * 1e9),
            gpu_uuids=uuids,
            real_gpus=bool(uuids) and not self.slot.gpus[0].simulated,
            files=files,
        )

    def _wait(self, job_id: str, container_id: str, timeout_s: float) -> Status | None:
        """Wait for exit; on deadline or cancel stop it and say which. None: it exited by itself."""
        started = self.runtime.state(container_id).started_at_ms or now_ms()
        deadline = started / 1000 + timeout_s  # from the container's own start: survives reattach
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                self._halt(container_id)
                return Status.TIMEOUT
            if self.runtime.wait(container_id, min(C.WAIT_SLICE_S, remaining)):
                return None
            if self.store.cancel_requested(job_id):
                self._halt(container_id)
                return Status.CANCELLED

    def _halt(self, container_id: str) -> None:
        self.runtime.stop(container_id, C.STOP_GRACE_S)  # SIGTERM, then SIGKILL after the grace
        self.runtime.kill(container_id)
        self.runtime.wait(container_id, 10)

    def _remove(self, name: str) -> None:
        try:
            container_id = self.runtime.find(name)
            if container_id is not None:
                self.runtime.remove(container_id)
        except ContainerError as exc:
            log.warning("container %s not removed: %s (it is reaped at the next worker start)", name, exc)
