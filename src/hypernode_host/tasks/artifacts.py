"""Collect a job's output files from /out after it exits: read, hashed, capped, and what did not fit said.

/out is a tmpfs (so its pages are charged to the job's memory cgroup, and it can hold no more than
its size) in an anonymous volume of a small holder container, which the job container mounts with
``volumes_from``. A tmpfs in the job's own container would vanish when the job exits; the holder
keeps it mounted until the worker has read it with ``get_archive`` (tasks/containers.py).
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from hypernode_host.core.artifacts import MAX_ARTIFACTS, Artifact, safe_path

log = logging.getLogger(__name__)

PAGE = 4096
SLACK_BYTES = 64 << 10  # beyond the cap, so a job one file over it is told so instead of hitting ENOSPC


def tmpfs_bytes(cap: int) -> int:
    """The size of the /out tmpfs for a cap of ``cap`` bytes: the cap in whole pages, plus a little."""
    return -(-cap // PAGE) * PAGE + SLACK_BYTES


@dataclass
class Collected:
    artifacts: list[Artifact] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    over_cap: bool = False  # the job left more than the cap (or more files than a result lists)
    skipped: int = 0  # entries that are not kept: too big, too many, not regular files, unsafe names
    total_bytes: int = 0  # of every regular file the job left


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks (the archive as the engine streams it)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def collect(chunks: Iterable[bytes], cap: int, root: str = "out") -> Collected:
    """The files in the tar stream ``chunks`` of /out (members named ``out/...``), within ``cap`` bytes.

    Files are taken in path order while they fit; one that does not is skipped and marks the job over
    its cap, as does a tmpfs found full (the job met ENOSPC) or more than MAX_ARTIFACTS files. Links,
    devices and names that are not safe relative paths are skipped and logged.
    """
    found = Collected()
    pages = 0
    entries: list[tuple[str, bytes]] = []
    reader: IO[bytes] = _ChunkReader(chunks)  # type: ignore[assignment]
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix(root).lstrip("/")
            if not member.isfile():
                if not member.isdir():
                    found.skipped += 1
                continue
            found.total_bytes += member.size
            pages += -(-member.size // PAGE)
            if not safe_path(name):
                log.warning("an output file with an unsafe name was not kept")
                found.skipped += 1
                continue
            handle = archive.extractfile(member)
            entries.append((name, handle.read() if handle is not None else b""))
    kept = 0
    for name, data in sorted(entries):
        if len(found.artifacts) >= MAX_ARTIFACTS or kept + len(data) > cap:
            found.over_cap = True
            found.skipped += 1
            continue
        kept += len(data)
        found.files[name] = data
        found.artifacts.append(Artifact(name, len(data), hashlib.sha256(data).hexdigest()))
    if (pages + 1) * PAGE > tmpfs_bytes(cap):  # the tmpfs was full: the job was refused bytes
        found.over_cap = True
    return found
