"""Proof vectors: fixed inputs give fixed digests, so any other implementation can check itself."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import base58
import pytest

from hypernode_host.core import proofs
from hypernode_host.errors import KeyFileError

# RFC 8032 section 7.1, TEST 1: secret key → public key.
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

JOB = {"type": "job", "id": "job-1", "script": "print('done')", "timeout": 10}
RESULT_FIELDS = {
    "id": "job-1",
    "nodeId": "node-1",
    "jobDigest": "a108eb4da315a7b80b8ef6cb459a29e7cc66b9887eeb0e2dd83921082d18967d",
    "image": "sha256:abc",
    "exitCode": 0,
    "status": "completed",
    "startedAt": 1700000000000,
    "completedAt": 1700000001500,
    "logsHash": hashlib.sha256(b"done\n").hexdigest(),
    "fullLogsHash": hashlib.sha256(b"done\n").hexdigest(),
}


def test_canonical_json_sorts_keys_has_no_spaces_and_is_utf8() -> None:
    assert proofs.canonical_json({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'.encode()


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        proofs.canonical_json({"x": float("nan")})


def test_logs_hash_is_sha256_of_the_utf8_text() -> None:
    assert proofs.logs_hash("hello ✅\n") == hashlib.sha256("hello ✅\n".encode()).hexdigest()
    assert proofs.logs_hash("hello ✅\n") == "19a78da6469b9ef75332f85c5ea23904b4a743c2d9510cf67ccafa470c84fa82"


def test_job_digest_ignores_the_frame_type_and_key_order() -> None:
    expected = hashlib.sha256(b'{"id":"job-1","script":"print(\'done\')","timeout":10}').hexdigest()
    assert proofs.job_digest(JOB) == expected == RESULT_FIELDS["jobDigest"]
    assert proofs.job_digest(dict(reversed(list(JOB.items())))) == expected


def test_execution_hash_vector() -> None:
    document = (
        '{"completedAt":1700000001500,"exitCode":0,"fullLogsHash":"%s","image":"sha256:abc",'
        '"jobDigest":"%s","jobId":"job-1","logsHash":"%s","nodeId":"node-1","startedAt":1700000000000,'
        '"status":"completed"}'
    ) % (RESULT_FIELDS["fullLogsHash"], RESULT_FIELDS["jobDigest"], RESULT_FIELDS["logsHash"])
    expected = hashlib.sha256(document.encode()).hexdigest()
    assert proofs.execution_hash(RESULT_FIELDS) == expected
    assert expected == "de9e5822b4731c4127d58844b6b5a2b88e568bd0f06ae4950a3c9614ca2c2a37"


def test_execution_hash_covers_every_field() -> None:
    base = proofs.execution_hash(RESULT_FIELDS)
    for name in ("id", *proofs.EXECUTION_FIELDS[1:]):
        changed = {**RESULT_FIELDS, name: "tampered"}
        assert proofs.execution_hash(changed) != base, name


def test_public_key_follows_rfc8032_and_is_base58() -> None:
    key = proofs.NodeKey.from_seed(RFC_SECRET)
    assert base58.b58decode(key.public_key_b58) == RFC_PUBLIC


def test_signature_vector_and_verification() -> None:
    key = proofs.NodeKey.from_seed(bytes(range(32)))
    digest = proofs.execution_hash(RESULT_FIELDS)
    signature = key.sign_hex_digest(digest)
    # Ed25519 is deterministic: the same key and digest always give this signature.
    assert signature == ("4ULViJSpQVFkFQJnqkwyDbpxg59HNPxDJc4LX3QLahDD1WL12rBGY1ewTx51Pq5GAA85mMJBsiSNtn7b7M92dSu9")
    assert proofs.verify_signature(key.public_key_b58, digest, signature)
    assert not proofs.verify_signature(key.public_key_b58, "00" * 32, signature)
    other = proofs.NodeKey.generate()
    assert not proofs.verify_signature(other.public_key_b58, digest, signature)
    assert not proofs.verify_signature("not base58!", digest, signature)


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "node.key"
    first = proofs.NodeKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert proofs.NodeKey.load_or_create(path).public_key_b58 == first.public_key_b58


def test_a_malformed_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="expected a 32-byte Ed25519 seed, found 5 bytes"):
        proofs.NodeKey.load_or_create(path)


def test_processes_starting_together_share_one_whole_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "node.key"
    code = (
        "import sys; from pathlib import Path; from hypernode_host.core.proofs import NodeKey; "
        "print(NodeKey.load_or_create(Path(sys.argv[1])).public_key_b58)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True) for _ in range(8)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1 and len(path.read_bytes()) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary file left behind
