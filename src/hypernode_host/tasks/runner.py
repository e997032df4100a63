"""Run one job in its container, from the job record to a signed result in the outbox.

claim → quarantine (GPU jobs) → disk floor → image (pulled if absent, a visible phase, retried) →
CUDA requirement against the driver (GPU jobs) → requirements (cached volume) → create → put script →
attach → start → wait in slices (deadline, cancel) → stop(grace) → kill → exit code and
OOMKilled → logs → result kept in the record → container removed → result published to the
outbox. The worker enforces the deadline itself: Dramatiq's TimeLimit cannot interrupt a
blocking Docker call.

Exactly one container and one result per job, however often its message arrives and wherever
a worker dies: the claim in Redis gives a job to one live slot at a time, the container's name
is a lock in Docker, a kept result is published as it is, and a finished record ends any later
delivery.
"""

from __future__ import annotations

import logging
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Protocol, TypeVar

from hypernode_host import AGENT_VERSION
from hypernode_host.core.admission import Admission, admit
from hypernode_host.core.clock import now_ms
from hypernode_host.core.cuda import Driver, incompatibility
from hypernode_host.core.jobs import MIN_CPUS, JobSpec, Reason, Status, reason_of
from hypernode_host.core.poison import quarantined_note, refusal, workload_of
from hypernode_host.core.progress import Progress, ProgressScanner
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.receipts import GpuFacts, RunFacts, Sandbox
from hypernode_host.core.results import CapturedLogs, error_result, internal_detail, make_result
from hypernode_host.core.slots import Slot, gpus_for
from hypernode_host.errors import ContainerError, EngineUnreachable, JobRejected, NameTaken, RequirementsFailed
from hypernode_host.logs import job_context
from hypernode_host.settings import Settings
from hypernode_host.state import RedisDown, RedisError, Store, write_refusal
from hypernode_host.state.records import JobRecord
from hypernode_host.tasks import artifacts
from hypernode_host.tasks.containers import (
    LABEL_ATTEMPT,
    LABEL_DEADLINE,
    LABEL_GPUS,
    LABEL_JOB,
    LABEL_NODE,
    LABEL_NODE_ID,
    LABEL_WORKER,
    OUT_DIR,
    SCRIPT_PATH,
    ContainerSpec,
    ContainerState,
    OutputStream,
    owned_by,
)
from hypernode_host.tasks.imagecache import CacheRuntime, ImageCache
from hypernode_host.tasks.images import check_pinned
from hypernode_host.tasks.logcapture import LogCapture
from hypernode_host.tasks.requirements import Limits, PrepRuntime, RequirementsInstaller

log = logging.getLogger(__name__)

LOG_DRAIN_S = 10.0  # after exit, how long the output stream may take to deliver its last bytes
WAIT_SLICE_S = 1.0  # the longest a wait for exit goes without looking at the deadline and the cancel flag
STOP_GRACE_S = 5  # between SIGTERM and SIGKILL when a job is stopped
MIN_NANO_CPUS = round(MIN_CPUS * 1e9)
REFUSED_FIRST_S, REFUSED_MAX_S = 0.25, 5.0  # waits between tries of a write Redis refused
SIGNAL_EXITS = (128 + 15, 128 + 9)  # the exit codes of a container ended by SIGTERM or SIGKILL
ENGINE_WAIT_S = 120  # how long past a job's deadline the runner waits for a vanished engine
ENGINE_POLL_MAX_S = 2.0  # the longest pause between two looks for it
ENGINE_RETRIES = 3  # starts over after the engine vanished before the container ran, at most


class _EngineLost(ContainerError):
    """The engine vanished while the job ran and did not come back in time: the job ends."""


T = TypeVar("T")


class GpuWatch(Protocol):
    """What the worker's watch over the slot's GPUs tells the runner (gpu/monitor.py behind it)."""

    def driver(self) -> Driver | None:
        """The driver of the slot's GPUs now (None: unknown)."""
        ...

    def fault(self, fresh: bool = False) -> str | None:
        """Why a GPU of the slot is unhealthy, as last checked (``fresh``: checked now); None when healthy."""
        ...


class PlannedGpus:
    """The watch of a runner without a worker (tests, benchmarks): the slot's GPUs as planned."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def driver(self) -> Driver | None:
        gpu = self.slot.gpus[0] if self.slot.gpus else None
        return Driver(gpu.driver_version, gpu.cuda_version) if gpu else None

    def fault(self, fresh: bool = False) -> str | None:
        return None


class Runtime(CacheRuntime, PrepRuntime, Protocol):
    """The container operations the runner needs (DockerRuntime in production)."""

    def create(self, spec: ContainerSpec) -> str: ...
    def attach(self, container_id: str) -> OutputStream: ...
    def logs(self, container_id: str) -> OutputStream: ...
    def stop(self, container_id: str, grace_s: int) -> None: ...
    def kill(self, container_id: str) -> None: ...
    def version(self) -> str: ...
    def create_holder(self, name: str, image: str, labels: Mapping[str, str], tmpfs_bytes: int) -> str: ...
    def archive(self, container_id: str, path: str) -> Iterator[bytes]: ...
    def reachable(self) -> bool: ...


def container_name(node: str, job_id: str) -> str:
    """Deterministic, so Docker's unique names make a second container for a job impossible; the
    node's identity in it, so another node on the same engine running the same job id gets its own.
    (Docker's names are ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``: a job id is of those characters, 64 at most.)"""
    return f"hn-job-{node}-{job_id}"


def _deadline_label(labels: Mapping[str, str]) -> float | None:
    """The epoch deadline (s) a container was created with, when its labels carry one."""
    value = labels.get(LABEL_DEADLINE, "")
    return int(value) / 1000 if value.isdigit() else None


def holder_name(node: str, job_id: str) -> str:
    """The job's outputs holder (tasks/artifacts.py): one per job and node, like its container."""
    return f"hn-out-{node}-{job_id}"


def job_times(docker_started: int, docker_finished: int, before_start: int | None, after_exit: int) -> tuple[int, int]:
    """(startedAt, completedAt), ordered and within what the worker itself saw, in epoch ms.

    Docker's StartedAt and FinishedAt are the truest times, but for a container that exits at once
    FinishedAt can come before StartedAt. So each is kept within the worker's own readings: not
    before it asked Docker to start the container (``before_start``; None for a container it found
    running after a restart) and not after it saw the container exited (``after_exit``), and the
    completion never before the start.
    """
    started = min(max(docker_started or after_exit, before_start or 0), after_exit)
    completed = min(max(docker_finished or after_exit, started), after_exit)
    return started, completed


def command_for(spec: JobSpec) -> list[str]:
    if spec.script is not None:
        return ["python", SCRIPT_PATH]
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
    container_id: str = ""
    runtime: str = ""
    sandbox: Sandbox | None = None
    gpu_uuids: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    collected: artifacts.Collected | None = None
    gpu_fault: str | None = None  # its GPU failed while it ran: what it reported, and the quarantine


class LogFollower:
    """Streams a container's output into a bounded LogCapture on its own thread.

    A fresh container is followed through attach, opened before it starts: every byte, and
    back-pressure instead of loss when the job writes faster than we read. A container found
    running after a worker restart is followed through the log driver from its start, which
    keeps the last 30 MiB: logBytes and fullLogsHash then cover what the driver still had.
    """

    def __init__(self, stream: OutputStream, max_chars: int) -> None:
        self.capture = LogCapture(max_chars)
        self.progress = ProgressScanner()
        self.error: str | None = None
        self._stream = stream
        self._thread = threading.Thread(target=self._follow, name="job-output", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for chunk in self._stream:
                self.capture.feed(chunk)
                self.progress.feed(chunk)
        except ContainerError as exc:
            self.error = str(exc)
        finally:
            self._stream.close()  # a reader that stopped must not leave dockerd blocked writing to it

    def finish(self, timeout_s: float = LOG_DRAIN_S) -> CapturedLogs:
        """The captured output, once the stream has ended (closing it if it has not within ``timeout_s``)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("output stream still open %.0f s after exit; closing it", timeout_s)
            self._stream.close()
            self._thread.join(timeout_s)
        if self.error:
            log.warning("output stream ended early: %s", self.error)
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
        sleep: Callable[[float], None] = time.sleep,
        watch: GpuWatch | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.key = key
        self.slot = slot
        self.slots = slots
        self.clock = clock
        self.sleep = sleep
        self.watch = watch or PlannedGpus(slot)
        self._fault_seen: str | None = None  # the GPU fault that stopped the job being followed
        self.installer = RequirementsInstaller(runtime, settings, slot.id, lambda: self.node)
        self.images = ImageCache(settings, store.images, runtime)

    @cached_property
    def node(self) -> str:
        """The node's identity on the engine, asked of Redis once (state/node.py)."""
        return self.store.node.identity()

    def run(self, job_id: str) -> None:
        """Run (or reattach to) the job and store exactly one result for it."""
        with job_context(job_id, self.slot.id):  # every record logged meanwhile names the job and slot
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        record = self.store.jobs.get(job_id)
        if record is None:
            log.warning("job %s: no record in Redis; message dropped", job_id)
            return
        if record.done:
            log.info("job %s: already finished; duplicate delivery ignored", job_id)
            return
        name = container_name(self.node, job_id)
        kept = record.pending()
        if kept is not None:  # the worker died between keeping the result and publishing it
            log.info("job %s: publishing the result its previous worker kept", job_id)
            self._publish(job_id, name, None, kept, self._gpus_of(record.received_job()))
            return
        attempt = self.claim(job_id, record, name)
        if attempt <= 0:
            return
        try:
            job = record.job()
        except ValueError as exc:  # a damaged record: the job ends, with what can be said of it
            detail = f"the job's stored copy cannot be read: {exc}"
            self._publish(job_id, name, None, self._error(job_id, record.received_job(), Reason.INVALID_JOB, detail))
            return
        try:
            outcome = self._execute_once_the_engine_answers(job_id, job, name, attempt)
        except NameTaken:
            log.warning("job %s: container %s belongs to another worker; leaving the job to it", job_id, name)
            return
        except (JobRejected, ContainerError, RequirementsFailed) as exc:
            log.warning("job %s: %s", job_id, exc)
            self._publish(job_id, name, None, self._error(job_id, job, reason_of(exc.reason), str(exc)))
            return
        except RedisDown:
            raise  # the job stays running on this slot: the slot's next worker resumes it
        except Exception as exc:  # a fault of ours, met by this job alone: it ends, the slot goes on
            log.exception("job %s: running it failed", job_id)
            self._publish(
                job_id, name, None, self._error(job_id, job, Reason.INTERNAL, internal_detail("running it", exc))
            )
            return
        try:
            result = self._result(job_id, job, outcome)
        except Exception as exc:
            log.exception("job %s: its result could not be built", job_id)
            result = self._error(job_id, job, Reason.INTERNAL, internal_detail("building its result", exc))
        self._publish(job_id, name, outcome.container_id, result, self._gpus_of(job))

    def refuse(self, record: JobRecord) -> bool:
        """Store the error result of a job refused at intake whose intake was cut short; False when
        it has a result already, or is not such a job."""
        full = self.store.jobs.get(record.id)
        if full is None or full.done or full.queue:
            return False
        reason, detail = full.refusal_reason or Reason.INVALID_JOB, full.refusal or "job refused by this node"
        return self.store.jobs.finish(full.id, self._error(full.id, full.received_job(), reason_of(reason), detail))

    def claim(self, job_id: str, record: JobRecord, name: str) -> int:
        """The attempt number once this slot holds the job; 0 or -1 (logged) when it must leave it."""
        attempt = self._stored(self.store.jobs.claim, job_id, self.settings.node_name, self.slot.id, name)
        if attempt == -1:
            holder = f"{record.host or '?'} slot {'?' if record.slot is None else record.slot}"
            log.info("job %s: running on %s, whose worker is alive; duplicate delivery ignored", job_id, holder)
        elif attempt == 0:
            log.info("job %s: already finished; duplicate delivery ignored", job_id)
        return attempt

    def _execute_once_the_engine_answers(self, job_id: str, job: dict[str, Any], name: str, attempt: int) -> Outcome:
        """``_execute``; when the engine stops answering before the job's container runs (it is
        restarting), wait for it and start over, instead of failing a job the engine never saw."""
        for _ in range(ENGINE_RETRIES):
            try:
                return self._execute(job_id, job, name, attempt)
            except ContainerError as exc:
                if isinstance(exc, _EngineLost) or exc.status_code is not None or self.runtime.reachable():
                    raise
                log.warning("job %s: %s; waiting for the Docker engine", job_id, exc)
                if not self._engine_back(self.clock() + ENGINE_WAIT_S):
                    raise
        return self._execute(job_id, job, name, attempt)

    def _engine_back(self, give_up: float) -> bool:
        """Wait (until epoch ``give_up``) for the engine to answer; whether it did."""
        delay = 0.5
        while not self.runtime.reachable():
            if self.clock() >= give_up:
                return False
            self.sleep(delay)
            delay = min(delay * 2, ENGINE_POLL_MAX_S)
        return True

    def _execute(self, job_id: str, job: dict[str, Any], name: str, attempt: int) -> Outcome:
        spec = JobSpec.parse(job)
        admission = admit(spec, self.settings, self.slots)
        outcome = self._execute_admitted(job_id, spec, admission, name, attempt)
        collected = self._collect(job_id) if outcome.container_id else None
        # What the receipt names beside what the container reported: its GPUs and its requirements.
        return replace(
            outcome,
            gpu_uuids=gpus_for(self.slot, spec.gpus),
            requirements=admission.requirements,
            collected=collected,
        )

    def replay(self, replay_id: str, job: dict[str, Any], image_id: str) -> Outcome:
        """Run ``job`` again as ``replay_id`` in exactly the image ``image_id``, for a determinism check.

        Nothing is claimed, kept or published: the outcome is only compared (ops/replay.py). The job was
        admitted once already; its image is pinned to the ID that ran, which needs no pull and no pattern.
        """
        spec = JobSpec.parse({**job, "id": replay_id})
        admission = replace(admit(spec, self.settings, self.slots), image=image_id)
        name = container_name(self.node, replay_id)
        outcome = None
        try:
            outcome = self._execute_admitted(replay_id, spec, admission, name, 1)
            collected = self._collect(replay_id) if outcome.container_id else None
            return replace(outcome, collected=collected)
        finally:
            self._remove(name, outcome.container_id if outcome else None)
            self._remove(holder_name(self.node, replay_id))

    def _holder(self, job_id: str, image_id: str, attempt: int) -> str | None:
        """A fresh outputs holder for the job (tasks/artifacts.py), when the node keeps output files."""
        if self.settings.max_output_bytes <= 0:
            return None
        self._remove(holder_name(self.node, job_id))  # an earlier attempt's: its files are not this run's
        labels = {LABEL_JOB: job_id, LABEL_NODE: self.settings.node_name, LABEL_NODE_ID: self.node}
        labels |= {LABEL_WORKER: str(self.slot.id), LABEL_ATTEMPT: str(attempt)}
        return self.runtime.create_holder(
            holder_name(self.node, job_id), image_id, labels, artifacts.tmpfs_bytes(self.settings.max_output_bytes)
        )

    def _collect(self, job_id: str) -> artifacts.Collected | None:
        """The job's output files, read from its holder; None when the node keeps none or they are lost."""
        if self.settings.max_output_bytes <= 0:
            return None
        holder = self.runtime.find(holder_name(self.node, job_id))
        if holder is None or not self.runtime.state(holder).running:
            log.warning("job %s: its outputs holder is gone; no output files", job_id)
            return None
        try:
            collected = artifacts.collect(self.runtime.archive(holder, OUT_DIR), self.settings.max_output_bytes)
        except (ContainerError, tarfile.TarError) as exc:
            log.warning("job %s: output files not read: %s", job_id, exc)
            return None
        log.info(
            "job %s: %d output files, %d bytes kept%s",
            job_id,
            len(collected.artifacts),
            sum(a.size for a in collected.artifacts),
            f"; over the cap of {self.settings.max_output_bytes} bytes" if collected.over_cap else "",
        )
        return collected

    def _execute_admitted(self, job_id: str, spec: JobSpec, admission: Admission, name: str, attempt: int) -> Outcome:
        existing = self.runtime.find(name)
        if existing is not None:
            found = self.runtime.state(existing)
            if not owned_by(self.node, found.labels):
                raise ContainerError(f"container {name} exists but belongs to another node; left alone")
            started_ms = found.started_at_ms
            if started_ms:
                log.info("job %s: reattaching to container %s", job_id, existing[:12])
                # The deadline it was created with (its requirements took part of the timeout), else
                # from its own start: either survives restarts.
                deadline = _deadline_label(found.labels) or started_ms / 1000 + admission.timeout_s
                outcome = self._follow(job_id, existing, self.runtime.logs(existing), deadline, None)
                return self._breaker(job_id, spec, admission.image, outcome)
            self.runtime.remove(existing)  # created but never started: its files may be missing
        if self.store.cancels.requested(job_id):
            return self._never_started(job_id)
        if spec.gpus:
            self._refuse_quarantined(spec, admission.image)
        self.images.ensure_floor()  # disk_full when the floor cannot be kept
        image_id = self.images.obtain(job_id, admission.image, lambda: self.store.cancels.requested(job_id))
        check_pinned(self.runtime, admission.image, image_id, admission.digests)
        if spec.gpus:
            self._check_cuda(admission.image, image_id)
        deps = None
        job_deadline = None
        if admission.requirements:
            # Installing them is part of the job: it counts against the job's own timeout.
            job_deadline = self.clock() + admission.timeout_s
            limits = Limits(spec.memory_bytes, int(spec.cpuLimit * 1e9), admission.timeout_s)
            deps = self.installer.ensure(
                image_id, admission.requirements, limits, should_stop=lambda: self.store.cancels.requested(job_id)
            )
            if deps is not None:
                self.images.used_volume(deps)
        if self.store.cancels.requested(job_id):
            return self._never_started(job_id)
        holder = self._holder(job_id, image_id, attempt)
        container_spec = self._spec(job_id, spec, image_id, name, attempt, deps, job_deadline, holder)
        container_id = self.runtime.create(container_spec)
        output = self.runtime.attach(container_id)
        before_start = self._now_ms()
        try:
            self.runtime.start(container_id)
        except ContainerError:
            output.close()
            raise
        # A hair after Docker's StartedAt: never early.
        deadline = job_deadline if job_deadline is not None else self.clock() + admission.timeout_s
        outcome = self._follow(job_id, container_id, output, deadline, before_start)
        return self._breaker(job_id, spec, admission.image, outcome)

    # GPU jobs: CUDA, quarantine, the breaker -------------------------------------------------

    def _check_cuda(self, image: str, image_id: str) -> None:
        """JobRejected (cuda_incompatible) before any container when the image needs a newer CUDA."""
        driver = self.watch.driver()
        if driver is None:
            return
        problem = incompatibility(self.runtime.image_env(image_id), driver)
        if problem is not None:
            raise JobRejected(f"image {image}: {problem}", reason=Reason.CUDA_INCOMPATIBLE)

    def _refuse_quarantined(self, spec: JobSpec, image: str) -> None:
        workload = workload_of(image, spec)
        held = self.store.quarantine.get(self.settings.node_name, workload)
        if held is not None:
            text = refusal(workload, held.job_id, held.reason, held.ttl_s)
            raise JobRejected(text, reason=Reason.QUARANTINED)

    def _breaker(self, job_id: str, spec: JobSpec, image: str, outcome: Outcome) -> Outcome:
        """A GPU job whose GPU failed while it ran ends gpu_lost, and its workload is quarantined."""
        if not spec.gpus or outcome.status is Status.CANCELLED:
            return outcome
        fault = outcome.gpu_fault or self.watch.fault(fresh=True)
        if fault is None:
            return outcome
        workload = workload_of(image, spec)
        ttl = self.settings.poison_quarantine
        if ttl > 0:
            gpu = fault.split(":", 1)[0] if fault.startswith(("GPU-", "MIG-")) else ",".join(self.slot.gpu_uuids)
            self.store.quarantine.add(
                self.settings.node_name, workload, job_id=job_id, gpu=gpu, reason=fault, at_ms=now_ms(), ttl_s=ttl
            )
        log.error("job %s: its GPU failed while it ran (%s); %s", job_id, fault, quarantined_note(workload, ttl))
        outcome.status = Status.FAILED
        outcome.gpu_fault = f"{fault}; {quarantined_note(workload, ttl)}"
        return outcome

    def _follow(
        self, job_id: str, container_id: str, output: OutputStream, deadline: float, before_start: int | None
    ) -> Outcome:
        """Wait for the container while its output streams in; the outcome once it has exited."""
        follower = LogFollower(output, self.settings.max_log_size)
        self._fault_seen = None
        try:
            reported: list[Progress | None] = [None]

            def report() -> None:  # at most once per wait slice: the job's record is not a log
                latest = follower.progress.latest
                if latest is not None and latest != reported[0]:
                    self.store.jobs.set_progress(job_id, latest.to_json())
                    reported[0] = latest

            while True:
                try:
                    status = self._wait(job_id, container_id, deadline, report)
                    after_exit = self._now_ms()
                    state = self._exit_state(container_id, status)
                    break
                except EngineUnreachable as exc:
                    log.warning("job %s: %s; waiting for it to come back", job_id, exc)
                    self._outlast_engine(job_id, container_id, deadline)
                    # live-restore kept the container: follow it again, from the log driver's start
                    follower.finish(0)
                    follower = LogFollower(self.runtime.logs(container_id), self.settings.max_log_size)
        finally:
            logs = follower.finish()
        if status is None:
            status = Status.COMPLETED if state.exit_code == 0 else Status.FAILED
        started_at, completed_at = job_times(state.started_at_ms, state.finished_at_ms, before_start, after_exit)
        return Outcome(
            status=status,
            exit_code=state.exit_code,
            oom_killed=state.oom_killed,
            logs=logs,
            started_at=started_at,
            completed_at=completed_at,
            image_id=state.image_id,
            container_id=container_id,
            runtime=state.runtime,
            sandbox=state.sandbox,
            gpu_fault=self._fault_seen,
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _exit_state(self, container_id: str, status: Status | None) -> ContainerState:
        """The exited container's state; EngineUnreachable when the engine went away as it exited.

        A stopping engine stops its containers first (SIGTERM, then SIGKILL) and a wait in flight sees
        that exit: a container killed by a signal that the runner did not send, on an engine that
        answers no more, was stopped by the engine.
        """
        try:
            state = self.runtime.state(container_id)
        except ContainerError as exc:
            if exc.status_code is None and not self.runtime.reachable():
                raise EngineUnreachable(f"the Docker engine went away: {exc}", container=container_id) from None
            raise
        if status is None and state.exit_code in SIGNAL_EXITS and not self.runtime.reachable():
            raise EngineUnreachable("the Docker engine stopped the container as it stopped", container=container_id)
        return state

    def _outlast_engine(self, job_id: str, container_id: str, deadline: float) -> None:
        """The engine went away while the job ran: wait for it (up to the job's deadline and
        ENGINE_WAIT_S more), then go on if live-restore kept the container running; else the job
        ends with one error result (ContainerError, engine_restarted)."""
        if not self._engine_back(max(deadline, self.clock()) + ENGINE_WAIT_S):
            raise _EngineLost(
                f"the Docker engine did not come back within {ENGINE_WAIT_S} s of the job's deadline",
                reason=Reason.ENGINE_ERROR,
                container=container_id,
            )
        try:
            running = self.runtime.state(container_id).running
        except ContainerError:  # removed meanwhile
            running = False
        if not running:
            raise ContainerError("the Docker engine restarted", reason=Reason.ENGINE_RESTARTED, container=container_id)
        log.warning("job %s: the Docker engine is back and kept the container running; reattached", job_id)

    def _never_started(self, job_id: str) -> Outcome:
        log.info("job %s: cancelled before it started", job_id)
        at = self._now_ms()
        empty = LogCapture(self.settings.max_log_size).result()
        return Outcome(Status.CANCELLED, -1, False, empty, at, at, "")

    def _spec(
        self,
        job_id: str,
        spec: JobSpec,
        image_id: str,
        name: str,
        attempt: int,
        deps: str | None,
        deadline: float | None = None,
        holder: str | None = None,
    ) -> ContainerSpec:
        files = {"script.py": spec.script.encode()} if spec.script is not None else {}
        uuids = gpus_for(self.slot, spec.gpus)
        extra = {LABEL_DEADLINE: str(int(deadline * 1000))} if deadline is not None else {}
        return ContainerSpec(
            name=name,
            image=image_id,
            command=command_for(spec),
            env={**spec.env, "JOB_ID": job_id},
            labels={
                LABEL_JOB: job_id,
                LABEL_NODE: self.settings.node_name,
                LABEL_NODE_ID: self.node,
                LABEL_WORKER: str(self.slot.id),
                LABEL_ATTEMPT: str(attempt),
                LABEL_GPUS: ",".join(uuids),
                **extra,
            },
            memory_bytes=spec.memory_bytes,
            nano_cpus=max(round(spec.cpuLimit * 1e9), MIN_NANO_CPUS),  # 0 would mean no limit at all
            gpu_uuids=uuids,
            real_gpus=bool(uuids) and not self.slot.gpus[0].simulated,
            files=files,
            deps_volume=deps,
            outputs_from=holder,
        )

    def _wait(
        self, job_id: str, container_id: str, deadline: float, tick: Callable[[], None] | None = None
    ) -> Status | None:
        """Wait for exit until ``deadline`` (epoch s); on deadline, cancel or a GPU fault stop it and say which.

        None: it exited by itself. ``tick`` runs after each wait slice (the job's progress).
        """
        while True:
            if tick is not None:
                tick()
            remaining = deadline - self.clock()
            if remaining <= 0:
                self._halt(container_id)
                return Status.TIMEOUT
            if self.runtime.wait(container_id, min(WAIT_SLICE_S, remaining)):
                return None
            if self.store.cancels.requested(job_id):
                log.info("job %s: cancelled while running; stopping it", job_id)
                self._halt(container_id)
                return Status.CANCELLED
            if self.slot.gpus and (fault := self.watch.fault()) is not None:
                log.error("job %s: its GPU failed (%s); stopping it", job_id, fault)
                self._halt(container_id)
                self._fault_seen = fault
                return Status.FAILED

    def _halt(self, container_id: str) -> None:
        self.runtime.stop(container_id, STOP_GRACE_S)  # SIGTERM, then SIGKILL after the grace
        self.runtime.kill(container_id)
        self.runtime.wait(container_id, 10)

    def _gpus_of(self, job: dict[str, Any]) -> tuple[str, ...]:
        """The GPUs the job runs on (its job.finished event names them); none when its spec does not parse."""
        try:
            return gpus_for(self.slot, JobSpec.parse(job).gpus)
        except Exception:  # a spec that does not parse never ran on a GPU
            return ()

    def _publish(
        self, job_id: str, name: str, container_id: str | None, result: dict[str, Any], gpus: Sequence[str] = ()
    ) -> None:
        """Keep the result, remove the container, then put the result in the outbox.

        Kept first, so a worker dying at any point never loses a result nor runs the job again;
        removed before publishing, so whoever reads a result finds the container gone.
        """
        self._stored(self.store.jobs.keep_result, job_id, result)
        self._remove(name, container_id)
        if self.settings.max_output_bytes > 0:
            self._remove(holder_name(self.node, job_id))  # after the job's container, which mounts its volume
        self._stored(self.store.jobs.finish, job_id, result, gpus=gpus, node=self.settings.node_name)

    def _stored(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``write(*args, **kwargs)``, tried again while Redis refuses writes (out of memory, a full disk):
        the job's claim and result wait for room instead of failing the job, and nothing is stored twice
        (each write is idempotent)."""
        delay = REFUSED_FIRST_S
        while True:
            try:
                return write(*args, **kwargs)
            except RedisError as exc:
                why = write_refusal(exc)
                if why is None:
                    raise
                if delay < REFUSED_MAX_S:  # said while the waits grow, not at every try
                    log.warning("Redis refuses writes (%s); trying again in %.1f s", why, delay)
            time.sleep(delay)
            delay = min(delay * 2, REFUSED_MAX_S)

    def _result(self, job_id: str, job: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        status, reason, collected = outcome.status, None, outcome.collected
        if collected is not None:
            self.store.artifacts.keep(job_id, collected.files)  # before the result names them
            if collected.over_cap and status not in (Status.TIMEOUT, Status.CANCELLED):
                status, reason = Status.FAILED, Reason.OUTPUT_TOO_LARGE
        result = make_result(
            job_id=job_id,
            job=job,
            node_id=self.store.node.node_id(),
            key=self.key,
            status=status,
            exit_code=outcome.exit_code,
            logs=outcome.logs,
            started_at=outcome.started_at,
            completed_at=outcome.completed_at,
            image=outcome.image_id,
            oom_killed=outcome.oom_killed,
            reason=Reason.GPU_LOST if outcome.gpu_fault else reason,
            gpu_fault=outcome.gpu_fault,
            facts=self._facts(outcome),
            artifacts=None if collected is None else collected.artifacts,
        )
        log.info(
            "job %s: %s (exit %s%s, %d ms, %d bytes of output) on %s",
            job_id,
            outcome.status.value,
            outcome.exit_code,
            ", out of memory" if outcome.oom_killed else "",
            outcome.completed_at - outcome.started_at,
            outcome.logs.total_bytes,
            self.slot.describe(),
        )
        return result.model_dump(mode="json")

    def _facts(self, outcome: Outcome) -> RunFacts:
        """What the receipt says produced this outcome: agent, engine, runtime, GPUs, sandbox, requirements."""
        by_uuid = {gpu.uuid: gpu for gpu in self.slot.gpus}
        gpus = tuple(
            GpuFacts(uuid, gpu.name, gpu.driver_version, gpu.cuda_version)
            for uuid in outcome.gpu_uuids
            if (gpu := by_uuid.get(uuid)) is not None
        )
        ran = bool(outcome.container_id)
        return RunFacts(
            agent_version=AGENT_VERSION,
            engine_version=(self.runtime.version() or None) if ran else None,
            runtime=outcome.runtime or None,
            gpus=gpus,
            sandbox=outcome.sandbox,
            requirements=outcome.requirements,
        )

    def _error(self, job_id: str, job: dict[str, Any], reason: Reason, detail: str) -> dict[str, Any]:
        result = error_result(
            job_id=job_id,
            job=job,
            node_id=self.store.node.node_id(),
            key=self.key,
            reason=reason,
            detail=detail,
            at_ms=self._now_ms(),
        )
        return result.model_dump(mode="json")

    def _remove(self, name: str, container_id: str | None = None) -> None:
        try:
            if not container_id:  # none made, or this worker did not make it: look, and touch only ours
                container_id = self.runtime.find(name)
                if container_id is not None and not owned_by(self.node, self.runtime.state(container_id).labels):
                    return  # another node's, under a name it took from us: never ours to remove
            if container_id:
                self.runtime.remove(container_id)
        except ContainerError as exc:
            log.warning("container %s not removed: %s (it is reaped at the next worker start)", name, exc)
