"""The reference backend's Oracle: a valid result passes, and each tampering fails exactly its own check."""

from __future__ import annotations

from typing import Any

import pytest

from hypernode_host.backend.oracle import CHECK_NAMES, Verification, verify
from hypernode_host.core import proofs, receipts

NODE = "node-a"
DISPATCHED = 1_700_000_000_000
RECEIVED = DISPATCHED + 5_000
JOB: dict[str, Any] = {"id": "job-1", "script": "print('all done')", "estimatedTime": 10}
KEY = proofs.NodeKey.generate()
OTHER_KEY = proofs.NodeKey.generate()
SANDBOX = receipts.Sandbox(
    memory_bytes=512 << 20,
    nano_cpus=1_000_000_000,
    pids_limit=1024,
    network="none",
    read_only_root=True,
    cap_drop=("ALL",),
    no_new_privileges=True,
    user="65534:65534",
    seccomp_profile=receipts.DOCKER_DEFAULT_SECCOMP,
)
RECEIPT = receipts.receipt(
    receipts.RunFacts(agent_version="test", engine_version="27.0", runtime="runc", sandbox=SANDBOX)
)


def signed_result(job: dict[str, Any] = JOB, *, key: proofs.NodeKey = KEY, **fields: Any) -> dict[str, Any]:
    """A job_result as an honest node builds it, after ``fields`` override the defaults."""
    result: dict[str, Any] = {
        "type": "job_result",
        "id": job["id"],
        "nodeId": NODE,
        "status": "completed",
        "success": True,
        "logs": "loading\nall done\n",
        "exitCode": 0,
        "startedAt": DISPATCHED + 1_000,
        "completedAt": DISPATCHED + 3_000,
        "image": "sha256:" + "ab" * 32,
        "jobDigest": proofs.job_digest(job),
        "fullLogsHash": proofs.sha256_hex(b"loading\nall done\n"),
        "logBytes": 17,
        "truncated": False,
        "oomKilled": False,
        "durationMs": 2_000,
        "nodePublicKey": key.public_key_b58,
        "receipt": RECEIPT,
        **fields,
    }
    result.setdefault("logsHash", proofs.logs_hash(result["logs"]))
    result["executionHash"] = proofs.execution_hash({**result, "jobId": result["id"]})
    result["signature"] = key.sign_hex_digest(result["executionHash"])
    return receipts.seal(result, key)


def check(
    result: dict[str, Any], job: dict[str, Any] = JOB, *, public_key: str | None = KEY.public_key_b58
) -> Verification:
    return verify(
        job,
        result,
        node_id=NODE,
        node_public_key=public_key,
        dispatched_at_ms=DISPATCHED,
        received_at_ms=RECEIVED,
    )


def failed(verification: Verification) -> set[str]:
    assert set(verification.reasons) == set(verification.failed), "one reason per failed check"
    assert not verification.verified
    return set(verification.failed)


def test_an_honest_result_is_verified() -> None:
    verification = check(signed_result())

    assert verification.verified
    assert verification.checks == dict.fromkeys(CHECK_NAMES, True)
    assert verification.reasons == {}
    assert verification.to_json() == {
        "verified": True,
        "checks": dict.fromkeys(CHECK_NAMES, True),
        "reasons": {},
    }


def test_logs_edited_after_hashing_fail_logs_hash() -> None:
    result = signed_result()
    result["logs"] = "loading\nall done\nand a line nobody hashed\n"

    assert failed(check(result)) == {"logsHashValid", "receiptHashValid"}


def test_an_execution_hash_that_does_not_cover_the_fields_fails_execution_hash() -> None:
    # The node signs a hash of something else: the signature is good, the hash is not this result's.
    result = signed_result()
    result["executionHash"] = proofs.sha256_hex(b"something else")
    result["signature"] = KEY.sign_hex_digest(result["executionHash"])

    assert failed(check(receipts.seal(result, KEY))) == {"executionHashValid"}


def test_an_execution_hash_edited_in_transit_fails_hash_and_signature() -> None:
    result = signed_result()
    result["executionHash"] = proofs.sha256_hex(b"something else")

    assert failed(check(result)) == {"executionHashValid", "signatureValid", "receiptHashValid"}


def test_a_result_from_another_node_fails_node_matches() -> None:
    assert failed(check(signed_result(nodeId="node-b"))) == {"nodeMatches"}


def test_a_nonzero_exit_code_fails_exit_code_zero() -> None:
    result = signed_result(exitCode=3, status="failed", success=False)

    assert failed(check(result)) == {"exitCodeZero"}


def test_exit_code_zero_needs_status_completed_too() -> None:
    assert failed(check(signed_result(status="timeout"))) == {"exitCodeZero"}


def test_abandoned_is_not_done() -> None:
    # Upstream's Oracle matched substrings, so it took "abandoned" for "done".
    assert failed(check(signed_result(logs="task abandoned\n"))) == {"completionMarker"}


@pytest.mark.parametrize(
    ("logs", "marked"),
    [
        ("Done.", True),
        ("training COMPLETED", True),
        ("result: success", True),
        ("finished in 3 s", True),
        ("process exit code 0", True),
        ("✅", True),
        ("task abandoned", False),
        ("unsuccessful", False),
        ("exit code 01", False),
        ("undone", False),
        ("", False),
    ],
)
def test_completion_marker_is_a_whole_word(logs: str, marked: bool) -> None:
    assert check(signed_result(logs=logs)).checks["completionMarker"] is marked


def test_a_run_longer_than_twice_the_estimate_in_seconds_fails_timing() -> None:
    job = {**JOB, "estimatedTime": 1}
    too_slow = signed_result(job, startedAt=DISPATCHED + 100, completedAt=DISPATCHED + 2_600)
    in_time = signed_result(job, startedAt=DISPATCHED + 100, completedAt=DISPATCHED + 2_000)

    assert failed(check(too_slow, job)) == {"timingValid"}
    assert check(in_time, job).verified


def test_a_start_before_dispatch_fails_timing() -> None:
    early = signed_result(startedAt=DISPATCHED - 6_000)
    within_skew = signed_result(startedAt=DISPATCHED - 4_000)

    assert failed(check(early)) == {"timingValid"}
    assert check(within_skew).verified


@pytest.mark.parametrize(
    "times",
    [
        {"completedAt": RECEIVED + 6_000},  # finished "after" it was received, beyond clock skew
        {"startedAt": DISPATCHED + 3_000, "completedAt": DISPATCHED + 2_000},  # backwards
        {"startedAt": float(DISPATCHED + 1_000)},  # not an integer
        {"completedAt": str(DISPATCHED + 3_000)},
    ],
)
def test_impossible_times_fail_timing(times: dict[str, Any]) -> None:
    assert failed(check(signed_result(**times))) == {"timingValid"}


def test_a_signature_by_another_key_fails_signature() -> None:
    result = signed_result()
    result["signature"] = OTHER_KEY.sign_hex_digest(result["executionHash"])

    assert failed(check(receipts.seal(result, KEY))) == {"signatureValid"}


def test_another_nodes_key_fails_node_key_when_the_node_registered_one() -> None:
    result = signed_result(key=OTHER_KEY)  # self-consistent, but not the key this node registered

    assert failed(check(result)) == {"nodeKeyMatches"}
    no_key = check(result, public_key=None)  # a node that registered no key: the signatures alone
    assert no_key.verified
    assert "nodeKeyMatches" in no_key.skipped


def test_a_result_for_another_job_fails_job_digest_and_execution_hash() -> None:
    # The execution hash is recomputed over the backend's own digest, so both checks catch it.
    result = signed_result(jobDigest=proofs.job_digest({**JOB, "script": "print('other')"}))

    assert failed(check(result)) == {"jobDigestValid", "executionHashValid"}


def test_an_upstream_style_result_fails_checks_without_raising() -> None:
    result = {"type": "job_result", "id": "job-1", "nodeId": NODE, "status": "completed", "logs": "done"}

    verification = check(result)

    assert failed(verification) == set(CHECK_NAMES) - {"nodeMatches", "completionMarker"}


@pytest.mark.parametrize(
    "junk",
    [
        {"logs": 123, "exitCode": True, "signature": None, "nodePublicKey": 5},
        {"logs": None, "executionHash": ["x"], "startedAt": None, "completedAt": True},
        {"signature": "0OIl not base58", "nodePublicKey": "tooshort"},
        {"executionHash": "zz" * 32},
    ],
)
def test_wrongly_typed_fields_fail_checks_never_raise(junk: dict[str, Any]) -> None:
    result = {**signed_result(), **junk}

    verification = check(result)

    assert not verification.verified
    assert set(verification.checks) == set(CHECK_NAMES)


def test_an_empty_result_fails_every_check() -> None:
    assert failed(check({})) == set(CHECK_NAMES)


def test_a_result_built_by_the_nodes_own_result_builder_is_verified() -> None:
    # The one place where the node's proofs and the Oracle's recomputation must agree.
    import json

    from hypernode_host.core.jobs import Status
    from hypernode_host.core.results import CapturedLogs, make_result

    text = "epoch 3\ntraining done\n"
    logs = CapturedLogs(text=text, total_bytes=len(text), full_sha256=proofs.sha256_hex(text.encode()), truncated=False)
    built = make_result(
        job_id=JOB["id"],
        job=JOB,
        node_id=NODE,
        key=KEY,
        status=Status.COMPLETED,
        exit_code=0,
        logs=logs,
        started_at=DISPATCHED + 500,
        completed_at=DISPATCHED + 4_000,
        image="sha256:" + "ef" * 32,
    )
    wire = json.loads(json.dumps(built.model_dump(mode="json")))  # as the backend receives it

    verification = check(wire)

    assert verification.verified, verification.reasons
