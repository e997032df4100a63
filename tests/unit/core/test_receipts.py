"""The receipt's parts: the seccomp profile's name, the requirements digest, the Merkle root's construction."""

from __future__ import annotations

import hashlib
import json

from hypernode_host.core import artifacts, proofs, receipts
from hypernode_host.tasks.containers import applied_sandbox


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_the_seccomp_profile_is_named_by_the_digest_of_what_the_engine_holds() -> None:
    profile = '{"defaultAction":"SCMP_ACT_ERRNO"}'
    assert receipts.seccomp_profile(["no-new-privileges:true"]) == "docker-default"
    assert receipts.seccomp_profile([f"seccomp={profile}"]) == "sha256:" + proofs.sha256_hex(profile.encode())
    assert receipts.seccomp_profile(["seccomp:unconfined"]) == "unconfined"


def test_the_requirements_digest_is_over_the_normalized_list() -> None:
    assert receipts.requirements_digest(()) is None
    assert receipts.requirements_digest(["numpy>=1.26", "scipy"]) == proofs.sha256_hex(b'["numpy>=1.26","scipy"]')


def test_the_sandbox_is_read_from_what_the_engine_reports() -> None:
    info = {
        "Config": {"User": "65534:65534"},
        "HostConfig": {
            "Memory": 536870912,
            "NanoCpus": 1000000000,
            "PidsLimit": 1024,
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "Runtime": "runc",
        },
    }
    sandbox = applied_sandbox(info)

    assert sandbox.to_json() == {
        "memoryBytes": 536870912,
        "nanoCpus": 1000000000,
        "pidsLimit": 1024,
        "network": "none",
        "readOnlyRoot": True,
        "capDrop": ["ALL"],
        "noNewPrivileges": True,
        "user": "65534:65534",
        "seccompProfile": "docker-default",
    }
    assert applied_sandbox({}).read_only_root is False  # nothing reported is nothing claimed


def test_the_merkle_root_is_the_documented_construction() -> None:
    entries = [{"path": p, "size": i, "sha256": proofs.sha256_hex(p.encode())} for i, p in enumerate("edcba")]
    leaf = {e["path"]: sha(b"\x00" + json.dumps(e, sort_keys=True, separators=(",", ":")).encode()) for e in entries}
    a, b, c, d, e = (leaf[p] for p in "abcde")
    ab, cd = sha(b"\x01" + a + b), sha(b"\x01" + c + d)
    expected = sha(b"\x01" + sha(b"\x01" + ab + cd) + e)  # five leaves split 4 + 1

    assert artifacts.merkle_root(entries) == expected.hex()
    assert artifacts.merkle_root(entries[:1]) == leaf["e"].hex()
    assert artifacts.merkle_root([]) == hashlib.sha256(b"").hexdigest()
    assert artifacts.merkle_root(reversed(entries)) == expected.hex()  # the order given does not matter


def test_a_listing_with_a_bad_entry_is_refused() -> None:
    good = {"path": "a/b.txt", "size": 3, "sha256": "0" * 64}
    assert artifacts.listing_problem([good]) is None
    for bad in (
        {**good, "path": "../escape"},
        {**good, "path": "/abs"},
        {**good, "path": "a//b"},
        {**good, "path": "a\x1bb"},
        {**good, "size": -1},
        {**good, "size": True},
        {**good, "sha256": "A" * 64},
        {**good, "extra": 1},
    ):
        assert artifacts.listing_problem([bad]) is not None, bad
    assert artifacts.listing_problem([good, good]) == "an artifact path is listed twice"
    assert artifacts.listing_problem("nope") == "artifacts is not a list"
