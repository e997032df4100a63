"""A worker process: one slot, one Dramatiq worker thread, one job at a time.

At start it takes the leases on its slot's GPUs (refused loudly if another worker holds one),
reattaches to its slot's interrupted jobs and reaps its slot's leftover containers; then, every
few seconds until SIGTERM, it refreshes the leases, checks its GPUs' health and rewrites its
registration. It consumes its slot's queues only while the slot serves: when a GPU is lost or
reports errors (unhealthy), the Docker engine does not answer (restarting, stopped: unhealthy too),
the driver changed under it (draining) or its GPU runs processes the node did not start (busy), it
stops consuming (the running job may finish, prefetched messages go back to the queue for other
slots) and says why in its registration; it resumes by itself once the condition is gone. A GPU
that fails while a job runs stops that job (the runner's breaker).

Every worker also offers, every few seconds, to run the reconciler (tasks/reconcile.py); a lock in
Redis lets one worker of all those sharing the Redis run each pass.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from hypernode_host import logs
from hypernode_host.core.clock import now_ms
from hypernode_host.core.cuda import Driver
from hypernode_host.core.jobs import JobSpec
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import Slot, SlotCondition, SlotState, gpus_for
from hypernode_host.errors import ConfigError, ContainerError, GpuError, JobRejected
from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.gpu.monitor import SlotMonitor
from hypernode_host.gpu.simulated import start_driver
from hypernode_host.settings import Settings
from hypernode_host.state import RedisDown, RedisError, Store, holders, redis_url, write_refusal
from hypernode_host.state.records import JobRecord, Registration
from hypernode_host.tasks.broker import ACTOR_NAME, build_broker, enqueue_job
from hypernode_host.tasks.containers import DockerRuntime
from hypernode_host.tasks.dramatiq_redis import Queues
from hypernode_host.tasks.reconcile import RECONCILE_EVERY_S, Reconciler
from hypernode_host.tasks.recovery import reap, recover
from hypernode_host.tasks.runner import JobRunner, container_name

log = logging.getLogger(__name__)

REGISTRATION_TTL_S = 15
REGISTRATION_EVERY_S = 5.0  # also how often the slot's health is checked
LEASE_TTL_S = 20  # a dead worker's GPUs are free again this long after its last refresh
# How long SIGTERM waits for the running job; after that the container keeps running and the
# slot's next worker reattaches to it (`up` kills a child that takes longer than this).
SHUTDOWN_WAIT_MS = 15_000
# An unhealthy slot's running job may run to its deadline (plus stop grace and log collection).
DRAIN_MARGIN_S = 60
REDIS_RETRY_FIRST_S, REDIS_RETRY_MAX_S = 0.5, 5.0  # waits while Redis fails a job's step
WATCH_TICK_S = 0.2  # how soon a worker consumes after its start-up recovery, and stops after SIGTERM


def slot_for(settings: Settings, slot_id: int) -> tuple[Slot, list[Slot]]:
    slots = plan_node_slots(settings)
    for slot in slots:
        if slot.id == slot_id:
            return slot, slots
    raise ConfigError(f"--slot {slot_id}: this node has slots 0..{len(slots) - 1}")


class Membership:
    """This worker's registration, rewritten at every check and whenever its job changes.

    One hash per host and slot (state/registry.py): admission, heartbeats, health, inspection
    and the simulated GPUs all read it.
    """

    def __init__(self, store: Store, registration: Registration, ttl_s: int) -> None:
        self.store = store
        self.registration = registration
        self.ttl_s = ttl_s
        self._lock = threading.Lock()

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.registration = dataclasses.replace(self.registration, **changes)
            self.store.registry.register(self.registration, self.ttl_s, now_ms())

    def withdraw(self) -> None:
        with self._lock:
            self.store.registry.unregister(self.registration.host, self.registration.slot.id)


class Consumption:
    """Dramatiq consumption of one slot's queues, started and stopped as the slot's health goes.

    Stopping (``pause``) happens in the background: Dramatiq lets the running job finish (up
    to ``drain_ms``, past its deadline, so the consumers keep the message's broker heartbeat
    alive and no other slot is handed the job meanwhile) and puts prefetched messages back on
    their queue. A fresh broker and Dramatiq worker start again only once every thread of the
    previous one has ended, so the slot never runs two jobs at once.
    """

    def __init__(self, settings: Settings, slot: Slot, serve: Callable[[str], None], drain_ms: int) -> None:
        self.settings = settings
        self.slot = slot
        self.serve = serve
        self.drain_ms = drain_ms
        self.broker: RedisBroker | None = None
        self._worker: dramatiq.Worker | None = None
        self._retired: list[tuple[RedisBroker, dramatiq.Worker, threading.Thread]] = []

    @property
    def consuming(self) -> bool:
        return self._worker is not None

    def start(self) -> bool:
        """Consume (again); False while the previous worker is still finishing its job."""
        if self._worker is not None:
            return True
        if not self._reap():
            return False
        broker = build_broker(redis_url(self.settings))
        # No retries: a job that ran and failed is the backend's to resubmit. No TimeLimit
        # (see tasks/broker.py): the runner enforces each job's deadline on the container itself.
        declare = dramatiq.actor(actor_name=ACTOR_NAME, broker=broker, queue_name=self.slot.queue, max_retries=0)
        declare(self.serve)
        for queue in self.slot.queues[1:]:
            broker.declare_queue(queue)
        worker = dramatiq.Worker(broker, queues=set(self.slot.queues), worker_threads=1)
        worker.queue_prefetch = 1  # an idle slot never waits behind a job another slot holds
        worker.start()
        self.broker, self._worker = broker, worker
        return True

    def pause(self) -> None:
        """Stop consuming, without waiting for the running job."""
        if self._worker is None or self.broker is None:
            return
        stopping = threading.Thread(
            target=self._worker.stop, kwargs={"timeout": self.drain_ms}, name="consumption-stop", daemon=True
        )
        stopping.start()
        self._retired.append((self.broker, self._worker, stopping))
        self._worker = None

    def close(self) -> None:
        """Stop consuming and wait (up to SHUTDOWN_WAIT_MS) for the running job."""
        if self._worker is not None:
            self._worker.stop(timeout=SHUTDOWN_WAIT_MS)
            self._worker = None
            if self.broker is not None:
                self.broker.close()
        for _, _, stopping in self._retired:
            stopping.join(SHUTDOWN_WAIT_MS / 1000)
        self._reap()

    def hand_back(self, job_id: str, queue: str) -> None:
        """Put a job this slot will not run back on ``queue``, for another slot (or this one, later)."""
        if self.broker is None:
            raise GpuError(f"job {job_id} cannot be handed back: this worker never consumed")
        enqueue_job(self.broker, queue, job_id)

    def _reap(self) -> bool:
        """Close the brokers of stopped workers; False while one still has a live thread."""
        for entry in list(self._retired):
            broker, worker, stopping = entry
            if stopping.is_alive() or any(t.is_alive() for t in worker.workers):
                return False
            broker.close()
            self._retired.remove(entry)
        return True


class SlotWorker:
    """One slot's worker: leases, health, registration and consumption, kept up until ``stop``."""

    def __init__(self, settings: Settings, slot_id: int, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.slot, slots = slot_for(settings, slot_id)
        self.store = Store.open(settings)
        self.runtime = DockerRuntime()
        key = NodeKey.load_or_create(settings.key_file)
        self.monitor = SlotMonitor(
            self.store.gpuflags,
            self.slot.gpu_uuids,
            simulated=settings.simulate_gpus is not None,
            host=settings.node_name,
            simulated_driver=start_driver(settings.simulate_driver),
            parents={g.uuid: g.parent_uuid for g in self.slot.gpus if g.parent_uuid},
        )
        self._condition = SlotCondition()
        self.runner = JobRunner(settings, self.store, self.runtime, key, self.slot, slots, watch=self)
        self.leases = self.store.leases(self.slot.gpu_uuids, holders.owner_id(self.slot.id), LEASE_TTL_S)
        identity = Registration(
            host=settings.node_name, slot=self.slot, owner=self.leases.owner, pid=os.getpid(), pidns=holders.current()
        )
        self.membership = Membership(self.store, identity, REGISTRATION_TTL_S)
        drain_ms = (settings.job_timeout + DRAIN_MARGIN_S) * 1000
        self.consumption = Consumption(settings, self.slot, self.serve, drain_ms)
        self.taking_jobs = threading.Event()
        self._recovery = threading.Thread(target=self._recover, name="recovery", daemon=True)
        self.queues = Queues.open(settings)
        self.reconciler = Reconciler(
            self.store,
            self.queues,
            settings.node_name,
            has_container=lambda job_id: self.runtime.find(container_name(self.runner.node, job_id)) is not None,
            refuse=self.runner.refuse,
            retention_s=settings.job_retention,
            tombstone_retention_s=settings.tombstone_retention,
        )
        self._reconciling = threading.Thread(target=self._reconcile, name="reconciler", daemon=True)

    def run(self) -> None:
        try:
            self.runtime.check_seccomp()  # before any job: none may run without the project's profile
        except ContainerError as exc:  # the engine is down: every job fails with that until it is back
            log.warning("cannot ask the Docker engine whether it applies seccomp profiles: %s", exc)
        self.leases.acquire()  # before touching any container: this slot's GPUs are ours alone
        try:
            self.monitor.open()
            self._check()  # registered (healthy or not) before anything else happens
            self._recovery.start()
            self._reconciling.start()
            self._watch()
        finally:
            log.info("worker stopping: %s", self.slot.describe())
            self.taking_jobs.clear()
            self.consumption.close()
            if self._recovery.ident is not None:
                self._recovery.join(SHUTDOWN_WAIT_MS / 1000)
            if self._reconciling.ident is not None:
                self._reconciling.join(SHUTDOWN_WAIT_MS / 1000)
            self.queues.close()
            self.membership.withdraw()
            self.leases.release()
            self.monitor.close()

    def _watch(self) -> None:
        """Until stopped: refresh and check every REGISTRATION_EVERY_S; consume once recovery is done.

        Only this thread starts and stops consumption, so health changes and the end of
        recovery never race each other.
        """
        next_check = time.monotonic() + REGISTRATION_EVERY_S
        while not self.stop.wait(WATCH_TICK_S):
            if self.taking_jobs.is_set() and not self._recovery.is_alive() and not self.consumption.consuming:
                self._consume()
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + REGISTRATION_EVERY_S
            try:
                if not self.leases.refresh():
                    raise GpuError("lost the lease on this slot's GPUs; stopping so that no two workers share a GPU")
                self._check()
            except RedisError as exc:
                # Refusing writes, Redis refuses every worker's: no lease can change hands meanwhile,
                # and the registration is rewritten at the next check that Redis takes.
                if (why := write_refusal(exc)) is None:
                    raise
                log.warning("Redis refuses writes (%s); the slot's registration waits for it", why)

    def _check(self) -> None:
        """Check the slot, stop consuming unless it serves, and re-register."""
        gpus = self.monitor.check(running=bool(self.membership.registration.job))
        self._condition = gpus  # the runner's breaker reads the GPUs' own condition, never the engine's
        docker = self.runtime.probe()
        condition = gpus
        if gpus.serving and not docker:  # restarting or stopped: no job could start; the running one waits for it
            condition = SlotCondition(SlotState.UNHEALTHY, "the Docker engine does not answer")
        if condition != SlotCondition(self.membership.registration.state, self.membership.registration.health):
            if condition.serving:
                log.warning("%s serves again; taking jobs", self.slot.describe())
            elif condition.state is SlotState.BUSY:
                log.warning("%s is busy, takes no jobs until it is free: %s", self.slot.describe(), condition.reason)
            else:
                log.error("%s takes no jobs (%s): %s", self.slot.describe(), condition.state.value, condition.reason)
        if condition.serving:
            self.taking_jobs.set()
        else:
            self.taking_jobs.clear()
            self.consumption.pause()
        # What the Docker engine says goes to the registration too, for a `check` that cannot reach it.
        self.membership.update(healthy=condition.healthy, health=condition.reason, state=condition.state, docker=docker)

    # GpuWatch, for the runner ------------------------------------------------------------------

    def driver(self) -> Driver | None:
        return self.monitor.driver

    def fault(self, fresh: bool = False) -> str | None:
        condition = self.monitor.check(running=True) if fresh else self._condition
        return condition.reason if condition.state is SlotState.UNHEALTHY else None

    def _consume(self) -> None:
        if self.consumption.start():
            log.info("worker ready: %s, queues %s", self.slot.describe(), ", ".join(self.slot.queues))

    def _reconcile(self) -> None:
        """Every RECONCILE_EVERY_S until stopped, the reconciler's pass when it is this worker's turn."""
        while not self.stop.wait(RECONCILE_EVERY_S):
            try:
                if self.reconciler.due():
                    self.reconciler.run()
                if not self._recovery.is_alive():
                    reap(self.runner, self.runtime, self.store, prep=False)
            except (RedisError, ContainerError) as exc:  # Redis or the engine away: the next pass tries again
                log.warning("reconciler pass skipped: %s", exc)

    def _recover(self) -> None:
        try:
            recover(self.runner, self.runtime, self.store)
        except ContainerError as exc:
            log.warning("could not reap leftover containers: %s", exc)
        if self.slot.id == 0:  # one worker per host pulls HN_PREPULL; the others find the images there
            self.runner.images.prepull()

    def serve(self, job_id: str) -> None:
        """The ``run_job`` actor: run the job on this slot, or hand it back while the slot is unhealthy.

        Redis going away (a restart, a dropped connection) or refusing writes is waited out and the
        job taken up again (every step is idempotent: the claim, the reattach, the kept result), so
        a passing Redis fault never dead-letters a message. A stop ends the wait: the message is
        acknowledged, and the reconciler gives the job, queued or running with no holder, a new one.
        """
        delay = REDIS_RETRY_FIRST_S
        while True:
            try:
                return self._serve(job_id)
            except RedisError as exc:
                if not (isinstance(exc, RedisDown) or write_refusal(exc)) or self.stop.is_set():
                    raise
                log.warning("job %s: Redis failed (%s); taking it up again in %.1f s", job_id, exc, delay)
            if self.stop.wait(delay):
                log.warning("job %s: stopping while Redis is unavailable; the reconciler requeues it", job_id)
                return
            delay = min(delay * 2, REDIS_RETRY_MAX_S)

    def _serve(self, job_id: str) -> None:
        record = self.store.jobs.get(job_id)
        if not self.taking_jobs.is_set():
            queue = (record.queue if record else "") or self.slot.queue
            state = self._condition.state.value
            log.warning("job %s: %s is %s; handed back to %s", job_id, self.slot.describe(), state, queue)
            self.consumption.hand_back(job_id, queue)
            return
        count, memory = _gpu_need(record)
        self._registered(job=job_id, job_gpus=gpus_for(self.slot, count), job_gpu_memory_mb=memory)
        try:
            self.runner.run(job_id)
        finally:
            self._registered(job="", job_gpus=(), job_gpu_memory_mb=None)

    def _registered(self, **changes: Any) -> None:
        """Say in the registration what the slot runs; while Redis refuses writes, at the next check."""
        try:
            self.membership.update(**changes)  # kept in memory first: the next check writes it
        except RedisError as exc:
            if write_refusal(exc) is None:
                raise


def _gpu_need(record: JobRecord | None) -> tuple[int, int | None]:
    """(GPU count, MiB per GPU) the job asks for; (0, None) when its record cannot say."""
    try:
        spec = JobSpec.parse(record.job() if record else {})
    except (JobRejected, ValueError):
        return 0, None
    return spec.gpus, spec.gpuMemoryMb


def run_worker(settings: Settings, slot_id: int, stop: threading.Event) -> None:
    """Serve one slot until ``stop`` is set (the process's SIGTERM); GpuError when its GPUs are held."""
    logs.bind_process(slot=slot_id)  # every line this process logs names its slot
    SlotWorker(settings, slot_id, stop).run()
