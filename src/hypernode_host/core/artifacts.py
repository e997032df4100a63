"""Output artifacts: the files a job leaves under /out, listed, hashed and bound by one Merkle root.

The exact construction (README: "Proofs"): each artifact is an entry {path, size, sha256}, ``path``
relative to /out in POSIX form, ``size`` in bytes, ``sha256`` the hex digest of its bytes. Entries are
sorted by path (code point order, which is UTF-8 byte order). Each entry's leaf is SHA-256 of the byte
0x00 followed by the canonical JSON of the entry; an inner node is SHA-256 of the byte 0x01 followed by
its two children's 32-byte digests. A list of n > 1 leaves splits at k, the largest power of two below
n: the root is the node over the root of the first k and the root of the rest. One leaf is its own
root; the empty list's root is SHA-256 of no bytes. The prefixes keep a leaf from passing as a node.

Pure: the worker reads the files (tasks/artifacts.py); this module decides what they are worth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypernode_host.core import proofs

MAX_ARTIFACTS = 1000  # files a result lists at most: the list travels in the job_result frame
MAX_PATH_CHARS = 1024
LEAF, NODE = b"\x00", b"\x01"


@dataclass(frozen=True, order=True)
class Artifact:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def leaf(entry: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(LEAF + proofs.canonical_json(dict(entry))).digest()


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below len(leaves)
    return hashlib.sha256(NODE + _root(leaves[:split]) + _root(leaves[split:])).digest()


def merkle_root(entries: Iterable[Mapping[str, Any]]) -> str:
    """The hex root over ``entries`` ({path, size, sha256} each), sorted by path first."""
    ordered = sorted(entries, key=lambda entry: str(entry["path"]))
    if not ordered:
        return hashlib.sha256(b"").hexdigest()
    return _root([leaf(entry) for entry in ordered]).hex()


def root_of(artifacts: Iterable[Artifact]) -> str:
    return merkle_root(a.to_json() for a in artifacts)


def listing_problem(listing: Any) -> str | None:
    """Why a result's ``artifacts`` value is not a list of well-formed entries; None when it is."""
    if not isinstance(listing, list):
        return "artifacts is not a list"
    if len(listing) > MAX_ARTIFACTS:
        return f"more than {MAX_ARTIFACTS} artifacts"
    paths: set[str] = set()
    for entry in listing:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            return "an artifact entry is not {path, size, sha256}"
        path, size, digest = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(path, str) or not safe_path(path):
            return "an artifact path is not a relative path under /out"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return "an artifact size is not a byte count"
        if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
            return "an artifact sha256 is not a lowercase hex digest"
        if path in paths:
            return "an artifact path is listed twice"
        paths.add(path)
    return None


def safe_path(path: str) -> bool:
    """A relative POSIX path with no empty, '.' or '..' part and no control character."""
    if not path or len(path) > MAX_PATH_CHARS or path.startswith("/"):
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
