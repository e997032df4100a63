"""`hypernode-host artifacts JOB_ID --out DIR`: a finished job's output files, written out and checked.

Each file is checked against the job's signed result (its size and SHA-256 in ``artifacts``) before
it counts as written; paths come from the node's own listing, and are still refused unless they are
plain relative paths, and written without following links, so a job cannot make this write outside DIR.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from hypernode_host.core.artifacts import listing_problem, safe_path
from hypernode_host.errors import HypernodeError, UnknownJob
from hypernode_host.state import Store


class ArtifactsUnavailable(HypernodeError):
    """The job has no output files here: none listed, or their retention ended."""


@dataclass(frozen=True)
class Written:
    path: str
    size: int
    sha256: str


def write_artifacts(store: Store, job_id: str, out_dir: Path) -> list[Written]:
    """Write the job's output files under ``out_dir`` (created); each one matches its listing or it fails."""
    record = store.jobs.get(job_id)
    if record is None or not record.result_json:
        raise UnknownJob(f"no finished job {job_id!r} on this node")
    listing = record.result().get("artifacts")
    if listing is None:
        raise ArtifactsUnavailable(f"job {job_id} has no output files (the node keeps none, or it never ran)")
    problem = listing_problem(listing)
    if problem is not None:
        raise ArtifactsUnavailable(f"job {job_id}: its result's listing is damaged: {problem}")
    files = store.artifacts.files(job_id)
    missing = [entry["path"] for entry in listing if entry["path"] not in files]
    if missing:
        raise ArtifactsUnavailable(f"job {job_id}: {len(missing)} of its output files are no longer kept")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in listing:
        data = files[entry["path"]]
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry["size"] or digest != entry["sha256"]:
            raise ArtifactsUnavailable(f"job {job_id}: a kept file does not match the signed listing")
        _write(out_dir, entry["path"], data)
        written.append(Written(entry["path"], len(data), digest))
    return written


def _write(out_dir: Path, path: str, data: bytes) -> None:
    if not safe_path(path):  # listing_problem refused these already; a second look costs nothing
        raise ArtifactsUnavailable("an output file's path is not a relative path")
    target = out_dir.joinpath(*path.split("/"))
    for parent in reversed(target.relative_to(out_dir).parents[:-1]):
        directory = out_dir / parent
        if directory.is_symlink():
            raise ArtifactsUnavailable(f"{directory} is a link; not writing through it")
        directory.mkdir(exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
