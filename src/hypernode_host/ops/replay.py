"""`hypernode-host replay JOB_ID`: run a retained job again in the same image ID and compare its outputs.

A determinism check, for an operator or an Oracle's spot-checker: do ``fullLogsHash`` (every byte the
job wrote) and ``artifactsRoot`` (its output files) come out the same? The replay runs in this process
with the job's own container contract; it is never recorded, queued or sent. CPU jobs only: a GPU job
would need a GPU that a worker of this node holds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from hypernode_host.core import proofs
from hypernode_host.core.artifacts import root_of
from hypernode_host.core.jobs import JobSpec
from hypernode_host.core.slots import plan_slots
from hypernode_host.errors import HypernodeError, UnknownJob
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.containers import DockerRuntime
from hypernode_host.tasks.runner import JobRunner


class ReplayRefused(HypernodeError):
    """The job cannot be replayed here (never ran, or needs a GPU)."""


@dataclass(frozen=True)
class Replay:
    id: str
    replay_id: str
    image: str
    status: str
    exit_code: int
    full_logs_hash: str
    original_full_logs_hash: str
    artifacts_root: str | None
    original_artifacts_root: str | None

    @property
    def logs_match(self) -> bool:
        return self.full_logs_hash == self.original_full_logs_hash

    @property
    def artifacts_match(self) -> bool:
        return self.artifacts_root == self.original_artifacts_root

    @property
    def matches(self) -> bool:
        return self.logs_match and self.artifacts_match

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "replayId": self.replay_id,
            "image": self.image,
            "status": self.status,
            "exitCode": self.exit_code,
            "fullLogsHash": {"original": self.original_full_logs_hash, "replay": self.full_logs_hash},
            "artifactsRoot": {"original": self.original_artifacts_root, "replay": self.artifacts_root},
            "logsMatch": self.logs_match,
            "artifactsMatch": self.artifacts_match,
            "matches": self.matches,
        }


def replay(settings: Settings, store: Store, job_id: str, runtime: DockerRuntime | None = None) -> Replay:
    """Run the finished job ``job_id`` again in the image ID its result names; how the two runs compare."""
    record = store.jobs.get(job_id)
    if record is None or not record.result_json or not record.job_json:
        raise UnknownJob(f"no finished job {job_id!r} on this node")
    job, result = record.job(), record.result()
    image = result.get("image")
    if not isinstance(image, str) or not image:
        raise ReplayRefused(f"job {job_id} never ran (status {result.get('status')}): nothing to replay")
    if JobSpec.parse(job).gpus:
        raise ReplayRefused(f"job {job_id} needs a GPU: replay runs CPU jobs only")
    slots = plan_slots([], 1)
    runner = JobRunner(settings, store, runtime or DockerRuntime(), proofs.NodeKey.generate(), slots[0], slots)
    replay_id = f"{job_id[:48]}-replay-{secrets.token_hex(3)}"
    outcome = runner.replay(replay_id, job, image)
    collected = outcome.collected
    return Replay(
        id=job_id,
        replay_id=replay_id,
        image=image,
        status=outcome.status.value,
        exit_code=outcome.exit_code,
        full_logs_hash=outcome.logs.full_sha256,
        original_full_logs_hash=str(result.get("fullLogsHash")),
        artifacts_root=None if collected is None else root_of(collected.artifacts),
        original_artifacts_root=result.get("artifactsRoot"),
    )
