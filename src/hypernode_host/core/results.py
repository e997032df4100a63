"""Build a job_result with its proofs: the one place where hashes and the signature are put together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypernode_host import AGENT_VERSION
from hypernode_host.core import artifacts as outputs
from hypernode_host.core import proofs, receipts
from hypernode_host.core.jobs import Reason, Status, default_reason
from hypernode_host.core.messages import JobResult
from hypernode_host.core.proofs import NodeKey
from hypernode_host.escapes import shown

MAX_DETAIL_CHARS = 500  # of an error result's one-line logs


@dataclass(frozen=True)
class CapturedLogs:
    """A job's output as the result carries it (tasks/logcapture.py captures it, bounded)."""

    text: str  # what goes into job_result.logs: at most max_chars characters
    total_bytes: int  # every byte the job wrote
    full_sha256: str  # SHA-256 of every byte, before any cut or decoding
    truncated: bool


def make_result(
    *,
    job_id: str,
    job: Mapping[str, Any],
    node_id: str | None,
    key: NodeKey,
    status: Status,
    exit_code: int,
    logs: CapturedLogs,
    started_at: int,
    completed_at: int,
    image: str,
    oom_killed: bool = False,
    reason: Reason | None = None,
    facts: receipts.RunFacts | None = None,
    artifacts: Sequence[outputs.Artifact] | None = None,
    gpu_fault: str | None = None,
) -> JobResult:
    """A signed result; ``job`` is the job exactly as received (it fixes jobDigest).

    ``reason`` defaults to what the status says (core/jobs.py default_reason); a completed job has none.
    ``facts`` fill its receipt (core/receipts.py); without them the receipt names the agent alone.
    ``artifacts`` (None: none were collected, the job never ran) are listed sorted by path, and their
    Merkle root goes in the result and its receipt.
    """
    facts = facts or receipts.RunFacts(agent_version=AGENT_VERSION)
    listing = None if artifacts is None else [a.to_json() for a in sorted(artifacts)]
    root = None if listing is None else outputs.merkle_root(listing)
    facts = replace(facts, artifacts_root=root)
    fields: dict[str, Any] = {
        "id": job_id,
        "nodeId": node_id,
        "jobDigest": proofs.job_digest(job),
        "image": image,
        "exitCode": exit_code,
        "status": status.value,
        "startedAt": started_at,
        "completedAt": completed_at,
        "logsHash": proofs.logs_hash(logs.text),
        "fullLogsHash": logs.full_sha256,
    }
    digest = proofs.execution_hash(fields)
    unsealed = JobResult(
        **fields,
        success=status is Status.COMPLETED,
        logs=logs.text,
        executionHash=digest,
        logBytes=logs.total_bytes,
        truncated=logs.truncated,
        oomKilled=oom_killed,
        durationMs=max(completed_at - started_at, 0),
        signature=key.sign_hex_digest(digest),
        nodePublicKey=key.public_key_b58,
        reason=None if status is Status.COMPLETED else (reason or default_reason(status, oom_killed)),
        receipt=receipts.receipt(facts),
        artifacts=listing,
        artifactsRoot=root,
        gpuFault=gpu_fault,
    )
    # Sealed last, over the result exactly as it is stored and sent: every field is covered.
    return JobResult.model_validate(receipts.seal(unsealed.model_dump(mode="json"), key))


def error_result(
    *,
    job_id: str,
    job: Mapping[str, Any],
    node_id: str | None,
    key: NodeKey,
    reason: Reason,
    detail: str,
    at_ms: int,
) -> JobResult:
    """A refused or failed-before-running job: status error, ``reason``, and ``detail`` as its one-line logs."""
    # One line, with nothing in it that could act on a terminal (it may quote a job's value).
    text = shown(detail.splitlines()[0], MAX_DETAIL_CHARS) if detail.strip() else reason.value
    raw = text.encode()
    logs = CapturedLogs(text=text, total_bytes=len(raw), full_sha256=proofs.sha256_hex(raw), truncated=False)
    return make_result(
        job_id=job_id,
        job=job,
        node_id=node_id,
        key=key,
        status=Status.ERROR,
        exit_code=-1,
        logs=logs,
        started_at=at_ms,
        completed_at=at_ms,
        image="",
        reason=reason,
    )


def internal_detail(doing: str, exc: BaseException) -> str:
    """The one line an error result (reason internal) gives for a fault of the node's own, met while
    ``doing`` something for one job; the node's log has the traceback."""
    return shown(f"node error while {doing}: {type(exc).__name__}: {exc}", MAX_DETAIL_CHARS - 100)
