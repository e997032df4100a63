"""Every result that is not completed names why, from one vocabulary; every error that ends a job names one."""

from __future__ import annotations

import inspect

import pytest

from hypernode_host import errors
from hypernode_host.core.jobs import Reason, Status, default_reason, reason_of
from hypernode_host.core.proofs import NodeKey, execution_hash
from hypernode_host.core.results import CapturedLogs, error_result, make_result

KEY = NodeKey.from_seed(bytes(32))
LOGS = CapturedLogs(text="out\n", total_bytes=4, full_sha256="0" * 64, truncated=False)


def _result(status: Status, **extra: object) -> dict[str, object]:
    result = make_result(
        job_id="j1",
        job={"id": "j1", "command": "true"},
        node_id="n1",
        key=KEY,
        status=status,
        exit_code=0 if status is Status.COMPLETED else 1,
        logs=LOGS,
        started_at=1000,
        completed_at=2000,
        image="sha256:abc",
        **extra,  # type: ignore[arg-type]
    )
    return result.model_dump(mode="json")


@pytest.mark.parametrize(
    ("status", "oom", "reason"),
    [
        (Status.COMPLETED, False, None),
        (Status.COMPLETED, True, None),  # a job that completed was not killed, whatever the flag says
        (Status.FAILED, False, "exit_code"),
        (Status.FAILED, True, "oom"),
        (Status.TIMEOUT, False, "timeout"),
        (Status.CANCELLED, False, "cancelled"),
        (Status.ERROR, False, "internal"),
    ],
)
def test_a_result_carries_the_reason_its_status_implies(status: Status, oom: bool, reason: str | None) -> None:
    assert _result(status, oom_killed=oom)["reason"] == reason


def test_a_specific_reason_wins_over_the_status_default() -> None:
    assert _result(Status.FAILED, reason=Reason.GPU_LOST)["reason"] == "gpu_lost"


def test_a_completed_job_never_carries_a_reason() -> None:
    assert _result(Status.COMPLETED, reason=Reason.INTERNAL)["reason"] is None


def test_an_error_result_carries_its_reason_and_its_detail_as_one_line() -> None:
    result = error_result(
        job_id="j1",
        job={"id": "j1"},
        node_id=None,
        key=KEY,
        reason=Reason.IMAGE_NOT_ALLOWED,
        detail="image 'x' is not allowed on this node\nsecond line",
        at_ms=5,
    ).model_dump(mode="json")

    assert (result["status"], result["reason"]) == ("error", "image_not_allowed")
    assert result["logs"] == "image 'x' is not allowed on this node"
    assert result["executionHash"] == execution_hash(result)  # the reason is not part of the signed document


def _error_classes() -> list[type[errors.HypernodeError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.HypernodeError)]


@pytest.mark.parametrize("kind", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_names_a_reason_of_the_vocabulary(kind: type[errors.HypernodeError]) -> None:
    assert Reason(kind.reason)


def test_an_error_may_narrow_its_reason() -> None:
    assert errors.JobRejected("image", reason=Reason.IMAGE_NOT_ALLOWED).reason == "image_not_allowed"
    assert errors.ImageUnavailable("slow", reason=Reason.IMAGE_PULL_TIMEOUT).reason == "image_pull_timeout"
    assert errors.JobRejected("bad").reason == "invalid_job"


def test_an_unknown_reason_reads_as_internal() -> None:
    assert reason_of("from-a-newer-version") is Reason.INTERNAL
    assert reason_of("oom") is Reason.OOM


def test_default_reasons_cover_every_status_but_completed() -> None:
    assert {s: default_reason(s) for s in Status} == {
        Status.COMPLETED: None,
        Status.FAILED: Reason.EXIT_CODE,
        Status.TIMEOUT: Reason.TIMEOUT,
        Status.CANCELLED: Reason.CANCELLED,
        Status.ERROR: Reason.INTERNAL,
    }
