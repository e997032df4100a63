"""The poison-job breaker, pure: what a workload is, and what its refusal says.

A job during which its GPU fails (a critical Xid, or the GPU falls off the bus) ends with reason
``gpu_lost``, and its workload is refused on this node's other GPUs for HN_POISON_QUARANTINE
seconds: one job that crashes GPUs must not crash every GPU of the node in turn. The workload is
the image and the digest of the job's code (its script, else its command): the same code resubmitted
under a new job id is the same workload.
"""

from __future__ import annotations

import hashlib
import json

from hypernode_host.core.jobs import JobSpec

WORKLOAD_CHARS = 32  # hex characters of a workload id: 128 bits


def workload_of(image: str, spec: JobSpec) -> str:
    """The workload id of ``spec`` run on ``image``."""
    code = spec.script if spec.script is not None else json.dumps(spec.command, sort_keys=True)
    code_digest = hashlib.sha256(code.encode()).hexdigest()
    return hashlib.sha256(f"{image}\n{code_digest}".encode()).hexdigest()[:WORKLOAD_CHARS]


def quarantined_note(workload: str, ttl_s: int) -> str:
    """What the ``gpu_lost`` result of the job that tripped the breaker says about it."""
    if ttl_s <= 0:
        return "the breaker is off (HN_POISON_QUARANTINE=0): this workload is not refused"
    return (
        f"workload {workload} is refused on this node's GPUs for {ttl_s} s (`hypernode-host gpus --clear-quarantine`)"
    )


def refusal(workload: str, job_id: str, reason: str, ttl_s: int) -> str:
    """Why a GPU job of a quarantined workload is refused (``reason``: what the GPU reported)."""
    return (
        f"workload {workload} is quarantined on this node for {ttl_s} s more: a GPU failed while job "
        f"{job_id} of the same image and code ran ({reason})"
    )
