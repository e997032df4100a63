"""What a worker does at start, before it consumes: finish its slot's interrupted jobs, reap leftovers.

A worker killed mid-job leaves its container running (or exited) and the job's record in
state running on its slot. The slot's next worker reattaches to that container (or collects
the exited one) and stores exactly one result, within seconds of its start instead of after
Dramatiq's heartbeat timeout; the killed worker's message, redelivered later, then finds the
job finished and does nothing. Containers of the slot that belong to no live job are removed,
and so are the slot's requirements containers, which only a dead predecessor can have left.
"""

from __future__ import annotations

import logging

from hypernode_host.errors import ContainerError
from hypernode_host.state import RedisDown, Store
from hypernode_host.tasks.containers import (
    LABEL_JOB,
    LABEL_NODE,
    LABEL_NODE_ID,
    LABEL_ROLE,
    LABEL_WORKER,
    DockerRuntime,
)
from hypernode_host.tasks.requirements import PREP_ROLE
from hypernode_host.tasks.runner import JobRunner

log = logging.getLogger(__name__)


def recover(runner: JobRunner, runtime: DockerRuntime, store: Store) -> None:
    """Finish this slot's interrupted jobs, then remove its containers that no live job owns."""
    for job_id in store.jobs.running(host=runner.settings.node_name, slot=runner.slot.id):
        log.info("job %s: resuming after a worker restart", job_id)
        try:
            runner.run(job_id)
        except RedisDown:
            raise
        except Exception:  # one job's trouble must not keep the slot from the others, nor from starting
            log.exception("job %s: could not be resumed", job_id)
    reap(runner, runtime, store)


def reap(runner: JobRunner, runtime: DockerRuntime, store: Store, *, prep: bool = True) -> None:
    """Remove the slot's containers whose job is finished or unknown, and (with ``prep``, at start,
    when no install can be running) its requirements containers.

    Only this node's (its identity's label), of this host and slot: another node on the same engine,
    or another host of this node, numbers its slots alike and may run a job of the same id. The worker
    also calls it every few seconds without ``prep``: a container whose removal failed (the engine was
    restarting) goes then, not only at the next worker start.
    """
    for container_id, labels in runtime.labelled(LABEL_NODE_ID, runner.node):
        if labels.get(LABEL_NODE) != runner.settings.node_name or labels.get(LABEL_WORKER) != str(runner.slot.id):
            continue
        if labels.get(LABEL_ROLE) == PREP_ROLE:
            if not prep:
                continue
            log.info("removing a requirements container left by a previous worker: %s", container_id[:12])
            runtime.remove(container_id)
            continue
        try:
            record = store.jobs.get(labels.get(LABEL_JOB, ""))
            if record is None or record.done:
                log.info("removing leftover container %s", container_id[:12])
                runtime.remove(container_id)
        except ContainerError as exc:  # one container's trouble must not keep the others in place
            log.warning("leftover container %s not removed: %s", container_id[:12], exc)
