"""The reference backend's Oracle: is a job_result a true, complete run of the job we sent?

Upstream's six checks done right (upstream's Oracle matched the marker as a substring, never read the exit
code, timed from the job's creation, checked only the hashes' format and passed 5 of 6): the completion
marker is a whole word, the exit code is read, timing runs from the node's ``startedAt`` with
``estimatedTime`` in seconds, hashes are recomputed instead of shape-checked, and the signature is verified.
Every check must pass: there is no "5 of 6" tolerance. Pure: no socket, no clock; a hostile result can
fail checks, never raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hypernode_host.core import proofs

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
)


@dataclass(frozen=True)
class Verification:
    """The Oracle's verdict on one result: every check by name, and a one-line reason per failure."""

    verified: bool
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]

    def to_json(self) -> dict[str, Any]:
        return {"verified": self.verified, "checks": dict(self.checks), "reasons": dict(self.reasons)}


@dataclass(frozen=True)
class _Context:
    """What the backend knows independently of the result."""

    job: Mapping[str, Any]
    node_id: str
    node_public_key: str | None
    dispatched_at_ms: int
    received_at_ms: int


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
    """Run every check on ``result`` (the job_result as received) against ``job`` (as the backend sent it)."""
    context = _Context(job, node_id, node_public_key, dispatched_at_ms, received_at_ms)
    checks: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    for name, check in _CHECKS.items():
        try:
            reason = check(result, context)
        except (TypeError, ValueError, AttributeError) as exc:  # a shape no check foresaw still only fails
            reason = f"cannot be checked: {type(exc).__name__}"
        checks[name] = reason is None
        if reason is not None:
            reasons[name] = reason
    return Verification(verified=all(checks.values()), checks=checks, reasons=reasons)


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
    # The hash is recomputed over the backend's own job id and digest, so a result can only be valid
    # for the job that was really sent. The wire names the job id `id`; the hash input names it `jobId`.
    fields = {**result, "jobId": ctx.job.get("id"), "jobDigest": proofs.job_digest(ctx.job)}
    if proofs.execution_hash(fields) != result.get("executionHash"):
        return "executionHash does not match the result's fields"
    return None


def _signature_valid(result: Mapping[str, Any], ctx: _Context) -> str | None:
    key, digest, signature = result.get("nodePublicKey"), result.get("executionHash"), result.get("signature")
    if not (isinstance(key, str) and isinstance(digest, str) and isinstance(signature, str)):
        return "nodePublicKey, executionHash and signature must all be strings"
    if ctx.node_public_key is not None and key != ctx.node_public_key:
        return "nodePublicKey is not the key the node registered"
    if not proofs.verify_signature(key, digest, signature):
        return "signature does not verify with nodePublicKey over executionHash"
    return None


_CHECKS: dict[str, _Check] = dict(
    zip(
        CHECK_NAMES,
        (
            _node_matches,
            _completion_marker,
            _exit_code_zero,
            _timing_valid,
            _job_digest_valid,
            _logs_hash_valid,
            _execution_hash_valid,
            _signature_valid,
        ),
        strict=True,
    )
)
