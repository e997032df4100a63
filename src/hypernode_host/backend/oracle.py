"""The reference backend's Oracle: is a job_result a true, complete run of the job we sent?

Upstream's six checks done right (upstream's Oracle matched the marker as a substring, never read the exit
code, timed from the job's creation, checked only the hashes' format and passed 5 of 6): the completion
marker is a whole word, the exit code is read, timing runs from the node's ``startedAt`` with
``estimatedTime`` in seconds, hashes are recomputed instead of shape-checked, and the signature is verified.
Every check must pass: there is no "5 of 6" tolerance. Pure: no socket, no clock; a hostile result can
fail checks, never raise.

Beyond upstream's six: the signature's key must be the one the node registered (``nodeKeyMatches``) and
the receipt (core/receipts.py) must be whole, hashed over the whole result, signed, and agree with the job.

The same checks run offline (``hypernode-host verify``, ``verify_offline``): a check that needs what only
the backend knows (the job, the node's id and key, when it dispatched and received the job) is then
skipped, and says what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hypernode_host.core import artifacts, proofs, receipts
from hypernode_host.core.jobs import JobSpec, parse_requirements
from hypernode_host.errors import JobRejected

# Clocks of node and backend are not in lockstep; a few seconds either way is not fraud.
CLOCK_SKEW_MS = 5000

# Whole words only: "abandoned" is not "done".
COMPLETED_MARKER = re.compile(r"(?i)(?<!\w)(completed|finished|success|done|exit code 0)(?!\w)|✅")

CHECK_NAMES = (
    "nodeMatches",
    "completionMarker",
    "exitCodeZero",
    "timingValid",
    "jobDigestValid",
    "logsHashValid",
    "executionHashValid",
    "signatureValid",
    "nodeKeyMatches",
    "receiptValid",
    "receiptHashValid",
    "receiptSignatureValid",
    "receiptMatchesJob",
)

# What a check may need beyond the result; offline, a check whose needs are not given is skipped.
JOB, NODE, KEY, TIMES = (
    "the job (--job)",
    "the node the job was sent to",
    "the node's key (--node-key)",
    ("when the job was dispatched and its result received"),
)


@dataclass(frozen=True)
class Verification:
    """The Oracle's verdict on one result: every check by name, and a one-line reason per failure."""

    verified: bool
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # check → what it needs that was not given

    @property
    def failed(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"verified": self.verified, "checks": dict(self.checks), "reasons": dict(self.reasons)}
        if self.skipped:
            found["skipped"] = dict(self.skipped)
        return found


@dataclass(frozen=True)
class _Context:
    """What the backend knows independently of the result; offline, any of it may be missing (None)."""

    job: Mapping[str, Any] | None
    node_id: str | None
    node_public_key: str | None
    dispatched_at_ms: int | None
    received_at_ms: int | None

    def missing(self, needs: tuple[str, ...]) -> str | None:
        """What of ``needs`` this context lacks, in one line; None when it has it all."""
        have = {JOB: self.job, NODE: self.node_id, KEY: self.node_public_key, TIMES: self.dispatched_at_ms}
        lacking = [need for need in needs if have[need] is None]
        return ", ".join(lacking) if lacking else None


# A check returns None when it passes, else the one-line reason it failed.
_Check = Callable[[Mapping[str, Any], _Context], str | None]


def verify(
    job: Mapping[str, Any],
    result: Mapping[str, Any],
    *,
    node_id: str,
    node_public_key: str | None,
    dispatched_at_ms: int,
    received_at_ms: int,
) -> Verification:
    """Run every check on ``result`` (the job_result as received) against ``job`` (as the backend sent it).

    A node that registered no key skips ``nodeKeyMatches`` (the signature is still checked with the key
    the result carries).
    """
    return _run(result, _Context(job, node_id, node_public_key, dispatched_at_ms, received_at_ms))


def verify_offline(
    result: Mapping[str, Any], *, job: Mapping[str, Any] | None = None, node_public_key: str | None = None
) -> Verification:
    """The same checks on a result alone: those needing what is not given are skipped (``skipped``).

    ``verified`` then means "no check failed": what was skipped was not shown.
    """
    return _run(result, _Context(job, None, node_public_key, None, None))


def _run(result: Mapping[str, Any], context: _Context) -> Verification:
    checks: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, (check, needs) in _CHECKS.items():
        lacking = context.missing(needs)
        if lacking is not None:
            skipped[name] = "needs " + lacking
            continue
        try:
            reason = check(result, context)
        except (TypeError, ValueError, AttributeError) as exc:  # a shape no check foresaw still only fails
            reason = f"cannot be checked: {type(exc).__name__}"
        checks[name] = reason is None
        if reason is not None:
            reasons[name] = reason
    return Verification(verified=all(checks.values()), checks=checks, reasons=reasons, skipped=skipped)


def _is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (``True == 1`` must not pass as an exit code or a timestamp)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """A value for a reason line: bounded, so a hostile field cannot bloat logs or replies."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _node_matches(result: Mapping[str, Any], ctx: _Context) -> str | None:
    if result.get("nodeId") != ctx.node_id:
        return f"nodeId {_short(result.get('nodeId'))} is not the node the job was sent to"
    return None


def _completion_marker(result: Mapping[str, Any], ctx: _Context) -> str | None:
    logs = result.get("logs")
    if not isinstance(logs, str):
        return "logs missing or not a string"
    if COMPLETED_MARKER.search(logs) is None:
        return "no completion marker (completed, finished, success, done, exit code 0, ✅) in the logs"
    return None


def _exit_code_zero(result: Mapping[str, Any], ctx: _Context) -> str | None:
    exit_code, status = result.get("exitCode"), result.get("status")
    if not _is_int(exit_code) or exit_code != 0:
        return f"exitCode is {_short(exit_code)}, not 0"
    if status != "completed":
        return f"status is {_short(status)}, not 'completed'"
    return None


def _timing_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    assert ctx.dispatched_at_ms is not None and ctx.received_at_ms is not None and ctx.job is not None
    started, completed = result.get("startedAt"), result.get("completedAt")
    if not (_is_int(started) and _is_int(completed)):
        return "startedAt and completedAt must be integers (ms since the epoch)"
    if started < ctx.dispatched_at_ms - CLOCK_SKEW_MS:
        return f"started {ctx.dispatched_at_ms - started} ms before the job was dispatched"
    if completed < started:
        return "completedAt is before startedAt"
    if completed > ctx.received_at_ms + CLOCK_SKEW_MS:
        return f"completed {completed - ctx.received_at_ms} ms after the result was received"
    return _within_estimate(completed - started, ctx.job.get("estimatedTime"))


def _within_estimate(duration_ms: int, estimated: Any) -> str | None:
    # 0 or absent means "no estimate", as upstream's `estimated_time || default` treated it.
    if estimated is None or estimated == 0:
        return None
    if not _is_number(estimated) or estimated < 0:
        return f"job estimatedTime {_short(estimated)} is not a number of seconds"
    if duration_ms > 2 * estimated * 1000:
        return f"ran {duration_ms} ms, more than twice the estimated {estimated} s"
    return None


def _job_digest_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    assert ctx.job is not None
    if result.get("jobDigest") != proofs.job_digest(ctx.job):
        return "jobDigest is not the digest of the job the backend sent"
    return None


def _logs_hash_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    logs = result.get("logs")
    if not isinstance(logs, str):
        return "logs missing or not a string"
    if proofs.logs_hash(logs) != result.get("logsHash"):
        return "logsHash does not match the logs sent"
    return None


def _execution_hash_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    # With the job, the hash is recomputed over the backend's own job id and digest, so a result can
    # only be valid for the job that was really sent. The wire names the job id `id`; the hash input
    # names it `jobId`. Without it (offline), over the result's own: jobDigestValid then needs the job.
    if ctx.job is None:
        fields = {**result, "jobId": result.get("id")}
    else:
        fields = {**result, "jobId": ctx.job.get("id"), "jobDigest": proofs.job_digest(ctx.job)}
    if proofs.execution_hash(fields) != result.get("executionHash"):
        return "executionHash does not match the result's fields"
    return None


def _signature_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    key, digest, signature = result.get("nodePublicKey"), result.get("executionHash"), result.get("signature")
    if not (isinstance(key, str) and isinstance(digest, str) and isinstance(signature, str)):
        return "nodePublicKey, executionHash and signature must all be strings"
    if not proofs.verify_signature(key, digest, signature):
        return "signature does not verify with nodePublicKey over executionHash"
    return None


def _node_key_matches(result: Mapping[str, Any], ctx: _Context) -> str | None:
    if result.get("nodePublicKey") != ctx.node_public_key:
        return "nodePublicKey is not the key the node registered"
    return None


def _receipt_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    receipt = result.get("receipt")
    if not isinstance(receipt, dict):
        return "receipt missing or not an object"
    if receipt.get("proofVersion") != receipts.PROOF_VERSION:
        return f"receipt proofVersion {_short(receipt.get('proofVersion'))} is not {receipts.PROOF_VERSION}"
    missing = sorted(receipts.RECEIPT_FIELDS - set(receipt))
    if missing:
        return f"receipt lacks {', '.join(missing)}"
    if not isinstance(receipt["gpus"], list):
        return "receipt gpus is not a list"
    sandbox = receipt["sandbox"]
    if sandbox is not None and not isinstance(sandbox, dict):
        return "receipt sandbox is not an object"
    if isinstance(sandbox, dict) and (sandbox.get("network") != "none" or sandbox.get("readOnlyRoot") is not True):
        return "receipt sandbox is not the contract's (network none, read-only root)"
    listing, root = result.get("artifacts"), receipt["artifactsRoot"]
    if listing is None and root is None:
        return None  # no artifacts were collected (the job did not run)
    problem = artifacts.listing_problem(listing)
    if problem is not None:
        return problem
    if not isinstance(listing, list) or root != artifacts.merkle_root(listing) or result.get("artifactsRoot") != root:
        return "artifactsRoot is not the Merkle root of the artifacts listed"
    return None


def _receipt_hash_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    if receipts.receipt_hash(result) != result.get("receiptHash"):
        return "receiptHash does not match the result (it covers every field but itself and its signature)"
    return None


def _receipt_signature_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    key, digest, signature = result.get("nodePublicKey"), result.get("receiptHash"), result.get("receiptSignature")
    if not (isinstance(key, str) and isinstance(digest, str) and isinstance(signature, str)):
        return "nodePublicKey, receiptHash and receiptSignature must all be strings"
    if not proofs.verify_signature(key, digest, signature):
        return "receiptSignature does not verify with nodePublicKey over receiptHash"
    return None


def _receipt_matches_job(result: Mapping[str, Any], ctx: _Context) -> str | None:
    assert ctx.job is not None
    receipt = result.get("receipt")
    if not isinstance(receipt, dict):
        return "receipt missing or not an object"
    if receipt.get("sandbox") is None:
        return None  # it never ran: there is nothing of the job's to match
    try:
        spec = JobSpec.parse(ctx.job)
    except JobRejected:
        return "the job is not a valid job, yet the receipt says it ran"
    if receipt.get("requirementsDigest") != receipts.requirements_digest(parse_requirements(spec.requirements)):
        return "receipt requirementsDigest is not the digest of the job's requirements"
    gpus = receipt.get("gpus")
    if not isinstance(gpus, list):
        return "receipt gpus is not a list"
    if len(gpus) != spec.gpus:
        return f"receipt names {len(gpus)} GPUs; the job asked for {spec.gpus}"
    return None


_CHECKS: dict[str, tuple[_Check, tuple[str, ...]]] = dict(
    zip(
        CHECK_NAMES,
        (
            (_node_matches, (NODE,)),
            (_completion_marker, ()),
            (_exit_code_zero, ()),
            (_timing_valid, (JOB, TIMES)),
            (_job_digest_valid, (JOB,)),
            (_logs_hash_valid, ()),
            (_execution_hash_valid, ()),
            (_signature_valid, ()),
            (_node_key_matches, (KEY,)),
            (_receipt_valid, ()),
            (_receipt_hash_valid, ()),
            (_receipt_signature_valid, ()),
            (_receipt_matches_job, (JOB,)),
        ),
        strict=True,
    )
)
