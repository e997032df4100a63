"""Offline verification: the Oracle's own checks on a result file, with what cannot be known skipped.

The property: a result changed in any one byte, its artifact list and receipt included, fails the check
that covers that byte (``receiptSignatureValid`` for the signature over the receipt hash, else
``receiptHashValid``, which covers every other byte; the field's own check too where it has one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hypernode_host.backend.oracle import CHECK_NAMES, verify_offline
from hypernode_host.backend.verify import UnreadableResult, load_json_object, printable, report, verify_file
from hypernode_host.cli import app
from hypernode_host.core import proofs, receipts
from hypernode_host.core.artifacts import Artifact
from hypernode_host.core.jobs import Status
from hypernode_host.core.results import CapturedLogs, make_result

KEY = proofs.NodeKey.from_seed(bytes(range(32)))
OTHER_KEY = proofs.NodeKey.from_seed(bytes(range(1, 33)))
JOB: dict[str, Any] = {
    "id": "job-7",
    "script": "print('training done')",
    "requirements": "numpy>=1.26\n",
    "gpuCount": 1,
    "estimatedTime": 30,
}
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
FACTS = receipts.RunFacts(
    agent_version="0.1.0-hypernode-host",
    engine_version="27.3.1",
    runtime="nvidia",
    gpus=(receipts.GpuFacts("GPU-3b1c", "NVIDIA H100 80GB HBM3", "550.54.15", "12.4"),),
    sandbox=SANDBOX,
    requirements=("numpy>=1.26",),
)
ARTIFACTS = (
    Artifact("model/weights.bin", 4096, proofs.sha256_hex(b"w" * 4096)),
    Artifact("metrics.json", 17, proofs.sha256_hex(b'{"loss": 0.0123}\n')),
)
ONLY_BACKEND_KNOWS = {"nodeMatches", "timingValid"}


def honest(*, key: proofs.NodeKey = KEY, job: dict[str, Any] = JOB, **changes: Any) -> dict[str, Any]:
    text = "epoch 1\nepoch 2\ntraining done\n"
    logs = CapturedLogs(text=text, total_bytes=len(text), full_sha256=proofs.sha256_hex(text.encode()), truncated=False)
    built = make_result(
        job_id=job["id"],
        job=job,
        node_id="node-a",
        key=key,
        status=Status.COMPLETED,
        exit_code=0,
        logs=logs,
        started_at=1_700_000_001_000,
        completed_at=1_700_000_004_000,
        image="sha256:" + "ef" * 32,
        facts=FACTS,
        artifacts=ARTIFACTS,
        **changes,
    )
    wire: dict[str, Any] = json.loads(json.dumps(built.model_dump(mode="json")))  # as a backend receives it
    return wire


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_honest_result_alone_passes_every_check_it_can_run() -> None:
    verification = verify_offline(honest())

    assert verification.verified, verification.reasons
    assert set(verification.skipped) == ONLY_BACKEND_KNOWS | {"jobDigestValid", "nodeKeyMatches", "receiptMatchesJob"}
    assert set(verification.checks) | set(verification.skipped) == set(CHECK_NAMES)


def test_with_the_job_and_the_key_only_what_the_backend_alone_knows_is_skipped() -> None:
    verification = verify_offline(honest(), job=JOB, node_public_key=KEY.public_key_b58)

    assert verification.verified, verification.reasons
    assert set(verification.skipped) == ONLY_BACKEND_KNOWS
    assert verification.skipped["timingValid"].startswith("needs ")


def test_the_receipt_names_what_ran() -> None:
    receipt = honest()["receipt"]

    assert receipt["engine"] == {"version": "27.3.1", "runtime": "nvidia"}
    assert receipt["gpus"] == [
        {"uuid": "GPU-3b1c", "model": "NVIDIA H100 80GB HBM3", "driverVersion": "550.54.15", "cudaVersion": "12.4"}
    ]
    assert receipt["sandbox"]["network"] == "none" and receipt["sandbox"]["seccompProfile"] == "docker-default"
    assert receipt["requirementsDigest"] == proofs.sha256_hex(b'["numpy>=1.26"]')
    assert receipt["artifactsRoot"] == honest()["artifactsRoot"]


def test_another_key_fails_node_key_and_another_job_fails_the_job_checks() -> None:
    result = honest(key=OTHER_KEY)
    assert verify_offline(result, node_public_key=KEY.public_key_b58).failed == ["nodeKeyMatches"]

    other_job = {**JOB, "requirements": "numpy>=2\n"}
    failed = verify_offline(honest(), job=other_job).failed
    assert failed == ["jobDigestValid", "executionHashValid", "receiptMatchesJob"]


def test_a_receipt_signed_again_by_a_dishonest_node_still_fails_what_it_lies_about() -> None:
    # The node re-hashes and re-signs, so the receipt's own checks pass: the Merkle root does not.
    result = honest()
    result["artifacts"][0]["size"] += 1

    resealed = receipts.seal(result, KEY)

    assert verify_offline(resealed).failed == ["receiptValid"]


def test_a_sandbox_outside_the_contract_fails_the_receipt() -> None:
    result = honest()
    result["receipt"]["sandbox"]["network"] = "host"

    assert verify_offline(receipts.seal(result, KEY)).failed == ["receiptValid"]


def _changed(result: dict[str, Any], position: int, byte: int) -> dict[str, Any] | None:
    """``result``'s canonical bytes with one byte replaced, parsed; None when they are no JSON object."""
    raw = bytearray(canonical(result))
    raw[position] = byte
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _assert_caught(original: dict[str, Any], changed: dict[str, Any]) -> None:
    fields = {k for k in original.keys() | changed.keys() if original.get(k) != changed.get(k)}
    failed = set(verify_offline(changed, job=JOB, node_public_key=KEY.public_key_b58).failed)
    covering = "receiptSignatureValid" if fields == {"receiptSignature"} else "receiptHashValid"
    assert covering in failed, (fields, failed)
    if "logs" in fields:
        assert "logsHashValid" in failed or "completionMarker" in failed
    if "artifacts" in fields:
        assert "receiptValid" in failed


def test_every_byte_of_a_result_is_covered() -> None:
    original = honest()
    size = len(canonical(original))
    caught = 0
    for position in range(size):
        for flip in (0x01,):
            byte = canonical(original)[position] ^ flip
            changed = _changed(original, position, byte)
            if changed is None or changed == original:  # no JSON (refused as unreadable) or the same value
                continue
            _assert_caught(original, changed)
            caught += 1
    assert caught > size // 2  # most one-byte changes still parse: the checks, not the parser, caught them


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_one_byte_change_fails_the_check_covering_it(data: st.DataObject) -> None:
    original = honest()
    raw = canonical(original)
    position = data.draw(st.integers(0, len(raw) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    changed = _changed(original, position, byte)
    assume(changed is not None and changed != original)
    assert changed is not None
    _assert_caught(original, changed)


def test_a_file_that_is_no_json_object_is_unreadable(tmp_path: Path) -> None:
    for text in ("{", "[1]", '{"a": NaN}'):
        path = tmp_path / "r.json"
        path.write_text(text)
        with pytest.raises(UnreadableResult):
            load_json_object(path, "result")


def test_submit_json_output_is_read_as_its_result(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"id": "job-7", "result": honest(), "verification": None}))

    _, verification = verify_file(path)

    assert verification.verified


def test_peer_values_are_escaped_before_printing() -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J\u202etxt\n"
    assert printable(hostile) == "\\x1b]0;owned\\x07\\x1b[2J\\u202etxt\\n"
    result = honest(job={**JOB, "id": "job-7"})
    result["nodeId"] = hostile
    result["exitCode"] = hostile

    lines = report(result, verify_offline(result))

    assert all(ch.isprintable() for line in lines for ch in line), lines
    assert any(line.startswith("FAIL    exitCodeZero") for line in lines)


def _cli(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    return done.exit_code, done.output


def test_the_command_prints_each_check_and_exits_0_only_when_none_fails(tmp_path: Path) -> None:
    result_file, job_file = tmp_path / "result.json", tmp_path / "job.json"
    result_file.write_text(json.dumps(honest()))
    job_file.write_text(json.dumps({"type": "job", **JOB}))

    code, output = _cli("verify", str(result_file), "--job", str(job_file), "--node-key", KEY.public_key_b58)
    assert code == 0, output
    lines = output.splitlines()
    needs = {
        "nodeMatches": "the node the job was sent to",
        "timingValid": "when the job was dispatched and its result received",
    }
    assert lines[1:-1] == [
        f"skipped {name}: needs {needs[name]}" if name in needs else f"PASS    {name}" for name in CHECK_NAMES
    ]
    assert lines[-1] == "verified: 11 passed, 0 failed, 2 skipped"

    code, output = _cli("verify", str(result_file), "--node-key", OTHER_KEY.public_key_b58)
    assert code == 1
    assert "FAIL    nodeKeyMatches: nodePublicKey is not the key the node registered" in output.splitlines()

    tampered = honest()
    tampered["artifacts"][1]["sha256"] = "0" * 64
    result_file.write_text(json.dumps(tampered))
    code, output = _cli("verify", str(result_file), "--json")
    assert code == 1
    verdict = json.loads(output)
    assert verdict["checks"]["receiptValid"] is False and verdict["checks"]["receiptHashValid"] is False

    result_file.write_text("not json")
    code, output = _cli("verify", str(result_file))
    assert code == 1 and "not JSON" in output


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _ = _cli("verify", str(tmp_path / "absent.json"))
    assert code == 2
