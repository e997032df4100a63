"""What an operator changes on a running node, apart from the dead letters (ops/deadletters.py): cancels."""

from __future__ import annotations

from hypernode_host.errors import UnknownJob
from hypernode_host.state import Store


def cancel_job(store: Store, job_id: str) -> str:
    """Ask for a job to be cancelled; its state now. A finished job's flag is not set.

    The runner stops a running job at its next wait slice; a queued job ends as cancelled
    without a container when a worker takes it.
    """
    record = store.jobs.get(job_id)
    if record is None:
        raise UnknownJob(f"no job {job_id!r} on this node")
    if record.active:
        store.cancels.request(job_id)
    return record.state or ""
