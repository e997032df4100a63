"""A worker process: one slot, one Dramatiq worker thread, one job at a time.

At start it reattaches to its slot's running jobs and reaps its slot's containers that
belong to no live job; then it consumes its slot's queue until SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import dramatiq

from hypernode_host import constants as C
from hypernode_host.errors import ConfigError, ContainerError
from hypernode_host.gpu import discover, plan_slots
from hypernode_host.gpu.leases import GpuLeases, owner_id
from hypernode_host.gpu.models import Slot
from hypernode_host.proofs import NodeKey
from hypernode_host.settings import Settings
from hypernode_host.store import Store
from hypernode_host.tasks.broker import build_broker
from hypernode_host.tasks.containers import DockerRuntime
from hypernode_host.tasks.recovery import recover
from hypernode_host.tasks.runner import JobRunner

log = logging.getLogger(__name__)

REGISTRATION_TTL_S = 15
REGISTRATION_EVERY_S = 5.0
LEASE_TTL_S = 20  # a dead worker's GPUs are free again this long after its last refresh
# How long SIGTERM waits for the running job; after that the container keeps running and the
# slot's next worker reattaches to it (`up` kills a child that takes longer than this).
SHUTDOWN_WAIT_MS = 15_000


def slot_for(settings: Settings, slot_id: int) -> tuple[Slot, list[Slot]]:
    slots = plan_slots(discover(settings), settings.cpu_slots)
    for slot in slots:
        if slot.id == slot_id:
            return slot, slots
    raise ConfigError(f"--slot {slot_id}: this node has slots 0..{len(slots) - 1}")


def run_worker(settings: Settings, slot_id: int, stop: threading.Event | None = None) -> None:
    """Serve one slot until SIGTERM/SIGINT (or ``stop`` is set)."""
    slot, slots = slot_for(settings, slot_id)
    store = Store.from_url(settings.redis_url)
    runtime = DockerRuntime()
    runner = JobRunner(settings, store, runtime, NodeKey.load_or_create(settings.key_file), slot, slots)
    broker = build_broker(settings.redis_url)
    # No retries: a job that ran and failed is the backend's to resubmit. No TimeLimit middleware
    # (see tasks/broker.py): the runner enforces each job's deadline on the container itself.
    declare = dramatiq.actor(actor_name=C.ACTOR_NAME, broker=broker, queue_name=slot.queue, max_retries=0)
    declare(runner.run)
    leases = GpuLeases(store.redis, slot.gpu_uuids, owner_id(slot.id), LEASE_TTL_S)
    leases.acquire()  # before touching any container: this slot's GPUs are ours alone
    stop = stop or threading.Event()
    _install_signals(stop)
    try:
        recover(runner, runtime, store)
    except ContainerError as exc:
        log.warning("could not reap leftover containers: %s", exc)
    worker = dramatiq.Worker(broker, queues={slot.queue}, worker_threads=1)
    worker.queue_prefetch = 1  # an idle slot never waits behind a job another slot holds
    info: dict[str, str | int] = {
        "owner": leases.owner,
        "slot": slot.id,
        "queue": slot.queue,
        "gpus": ",".join(slot.gpu_uuids),
        "host": settings.node_name,
        "pid": os.getpid(),
    }
    worker.start()
    log.info("worker ready: %s, queue %s", slot.describe(), slot.queue)
    try:
        while not stop.is_set():
            if not leases.refresh():
                log.error("lost the lease on this slot's GPUs; stopping so no two workers share a GPU")
                break
            store.register_worker(slot.id, info, REGISTRATION_TTL_S)
            stop.wait(REGISTRATION_EVERY_S)
    finally:
        log.info("worker stopping: %s", slot.describe())
        worker.stop(timeout=SHUTDOWN_WAIT_MS)
        store.unregister_worker(slot.id)
        leases.release()
        broker.close()


def _install_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
