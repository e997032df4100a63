"""Proofs a result carries (README: "Proofs"): hashes anyone can recompute, and an Ed25519 signature.

Pure functions over bytes and mappings, plus the node key file. The reference backend's
Oracle uses the same functions to check what workers produce.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import base58
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from hypernode_host.errors import KeyFileError

# The fields executionHash covers, all of them sent in the job_result.
EXECUTION_FIELDS = (
    "jobId",
    "nodeId",
    "jobDigest",
    "image",
    "exitCode",
    "status",
    "startedAt",
    "completedAt",
    "logsHash",
    "fullLogsHash",
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one byte form every hash here is taken over.

    Total over what the codec (core/messages.py) lets through: JSON values without lone surrogates or
    non-finite numbers. ValueError for anything else (NaN, infinity); a lone surrogate that reached it
    by another way is written as its surrogate bytes rather than raising (the same bytes as UTF-8 for
    every real string).
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "surrogatepass")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def logs_hash(logs: str) -> str:
    """SHA-256 of the UTF-8 bytes of ``logs`` exactly as sent (upstream-compatible)."""
    return sha256_hex(logs.encode("utf-8"))


def job_digest(job: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the job as received, without the frame's ``type``.

    Never raises, so that every job, however it reached a result, can be given a signed one: a job
    outside the codec's domain (it came by no frame: an old record, a caller's bug) is digested from
    the same canonical form with non-finite numbers written as JSON5 writes them, and any value JSON
    cannot hold by its repr. No job the codec admits takes that path.
    """
    document = {k: v for k, v in job.items() if k != "type"}
    try:
        return sha256_hex(canonical_json(document))
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        fallback = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr)
    except (ValueError, TypeError, RecursionError):
        fallback = _last_resort(document)
    return sha256_hex(fallback.encode("utf-8", "surrogatepass"))


def _last_resort(document: Mapping[str, Any]) -> str:
    try:
        return repr(sorted(document.items(), key=lambda item: str(item[0])))
    except Exception:  # nested past the interpreter's stack: its keys still tell it apart
        return repr(sorted(str(key) for key in document))


def execution_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the EXECUTION_FIELDS taken from a job_result.

    A job_result calls the job id ``id``; the hashed document calls it ``jobId``.
    """
    values = {name: fields.get(name) for name in EXECUTION_FIELDS}
    if "jobId" not in fields:
        values["jobId"] = fields.get("id")
    return sha256_hex(canonical_json(values))


class NodeKey:
    """The node's Ed25519 key; signatures and the public key are written in base58, as Solana does."""

    def __init__(self, private: SigningKey) -> None:
        self._private = private
        self.public_key_b58: str = base58.b58encode(bytes(private.verify_key)).decode()

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """The key whose 32-byte Ed25519 seed (RFC 8032's secret key) is ``seed``."""
        return cls(SigningKey(seed))

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(SigningKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> NodeKey:
        """Read the 32-byte seed from ``path``, creating it (mode 0600) on first start."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Write a private temporary file, then link it into place: the key file appears whole or
        # not at all, so a worker starting at the same moment never reads a half-written seed.
        fd, temporary = tempfile.mkstemp(prefix=".node-key-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(key._private))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:  # another process of this node created it first: use theirs
            return cls._load(path)
        finally:
            os.unlink(temporary)
        return key

    @classmethod
    def _load(cls, path: Path) -> NodeKey:
        seed = path.read_bytes()
        if len(seed) != 32:
            raise KeyFileError(f"{path}: expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
        return cls(SigningKey(seed))

    def sign_hex_digest(self, digest_hex: str) -> str:
        """Sign the 32 raw bytes of a SHA-256 hex digest; base58 signature."""
        return base58.b58encode(self._private.sign(bytes.fromhex(digest_hex)).signature).decode()


def verify_signature(public_key_b58: str, digest_hex: str, signature_b58: str) -> bool:
    """True when ``signature_b58`` is the key's Ed25519 signature over the digest's raw bytes."""
    try:
        public = VerifyKey(base58.b58decode(public_key_b58))
        public.verify(bytes.fromhex(digest_hex), base58.b58decode(signature_b58))
    except (BadSignatureError, ValueError, TypeError, AttributeError):
        return False
    return True
