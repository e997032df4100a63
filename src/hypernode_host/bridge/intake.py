"""Jobs in: admit, record (the one atomic claim of a job id), enqueue, or refuse with an error result.

Synchronous (Redis, Dramatiq): the bridge calls it through ``asyncio.to_thread``. Every method is
safe to call again after a Redis failure at any point, or after the bridge died half-way: the claim
is atomic, and a claim whose intake was cut short is completed by the next call for that job (the
backend sends it again) or by ``reconcile`` when the bridge starts.

Each job has a boundary: whatever raises while one job is admitted, recorded or enqueued (but Redis
being down, which is waited out) ends that job with a signed ``error`` result (reason ``internal``)
naming the cause in one line; the bridge, and every other job, goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from hypernode_host.core.admission import admit
from hypernode_host.core.clock import now_ms
from hypernode_host.core.jobs import JobSpec, JobState, Reason, reason_of
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.results import error_result, internal_detail
from hypernode_host.core.slots import Slot
from hypernode_host.errors import JobRejected, StorageRefused
from hypernode_host.gpu.capacity import serving_slots
from hypernode_host.settings import Settings
from hypernode_host.state import RedisDown, RedisError, Store, write_refusal
from hypernode_host.state.records import JobRecord
from hypernode_host.tasks.broker import enqueue_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Known:
    """A job id this node already has, sent again: where it stands (the session decides what the backend hears)."""

    job_id: str
    state: JobState
    result: str | None = None  # the result exactly as stored, once there is one


class Intake:
    def __init__(
        self, settings: Settings, store: Store, broker: RedisBroker, key: NodeKey, slots: Sequence[Slot]
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.key = key
        self.slots = slots

    def accept(self, job_id: str, fields: Mapping[str, Any]) -> Known | None:
        """Take a job in; for a job id already known, where it stands instead (it never runs twice).

        None: a new job (queued, or refused with an error result in the outbox), or a record this
        version cannot read.
        """
        try:
            recorded, queue, refusal = self._record(job_id, fields)
        except RedisError as exc:  # reads included: a Redis out of memory refuses MULTI too
            if (why := write_refusal(exc)) is None:
                raise
            raise StorageRefused(f"job not taken in: the node's Redis refuses writes ({why})") from None
        if not recorded:
            return self._known(job_id)
        try:
            self._complete_or_end(job_id, fields, queue, refusal)
        except RedisError as exc:  # taken in: its message (or refusal) follows once Redis takes writes again
            if (why := write_refusal(exc)) is None:
                raise
            log.warning("job %s: recorded, but Redis refuses writes (%s); the reconciler completes it", job_id, why)
        return None

    def _record(self, job_id: str, fields: Mapping[str, Any]) -> tuple[bool, str, tuple[str, str] | None]:
        """Admit and record the job: (new, its queue, its refusal)."""
        refusal: tuple[str, str] | None = None
        try:
            queue = admit(JobSpec.parse(fields), self.settings, self.serving_slots()).queue
        except JobRejected as exc:
            queue, refusal = "", (exc.reason, str(exc))
        except RedisDown:
            raise
        except RedisError as exc:
            if write_refusal(exc) is not None:
                raise
            log.exception("job %s: admission failed", job_id)
            queue, refusal = "", (Reason.INTERNAL, internal_detail("admitting it", exc))
        except Exception as exc:  # a fault of ours, met by this job alone: it ends with an error result
            log.exception("job %s: admission failed", job_id)
            queue, refusal = "", (Reason.INTERNAL, internal_detail("admitting it", exc))
        return self.store.jobs.record(job_id, fields, queue, refusal), queue, refusal

    def refusal_result(self, job_id: str, fields: Mapping[str, Any], refused: StorageRefused) -> dict[str, Any]:
        """The error result of a job that could not even be recorded: sent as is, stored nowhere (its id
        is not claimed, so the same job sent later runs)."""
        result = error_result(
            job_id=job_id,
            job=fields,
            node_id=self.store.node.node_id(),
            key=self.key,
            reason=reason_of(refused.reason),
            detail=str(refused),
            at_ms=now_ms(),
        )
        return result.model_dump(mode="json")

    def reconcile(self) -> None:
        """Complete the intake of jobs recorded by a bridge that died before it could enqueue them.

        One job at a time: a record that cannot be completed ends with an error result (or, if even that
        fails, is logged and left), and never keeps the bridge from starting.
        """
        for job_id in self.store.jobs.unenqueued():
            try:
                record = self.store.jobs.get(job_id)
                if record is not None and record.job_json:
                    log.info("job %s: completing its intake after a bridge restart", job_id)
                    self._complete_or_end(job_id, record.received_job(), record.queue, _refusal(record))
            except RedisDown:
                raise
            except Exception:
                log.exception("job %s: its intake could not be completed; left as it is", job_id)

    def serving_slots(self) -> list[Slot]:
        """This host's healthy slots plus the live healthy slots of hosts that joined its Redis."""
        return serving_slots(self.slots, self.store.registry.all(), self.settings.node_name)

    def _complete_or_end(
        self, job_id: str, fields: Mapping[str, Any], queue: str, refusal: tuple[str, str] | None
    ) -> None:
        """``_complete``, and if that raises (but for Redis down), the job's end: an error result."""
        try:
            self._complete(job_id, fields, queue, refusal)
        except RedisDown:
            raise
        except RedisError as exc:
            if write_refusal(exc) is not None:  # not the job's fault: it is completed once Redis takes writes
                raise
            log.exception("job %s: intake failed", job_id)
            self._complete(job_id, fields, "", (Reason.INTERNAL, internal_detail("taking it in", exc)))
        except Exception as exc:
            log.exception("job %s: intake failed", job_id)
            self._complete(job_id, fields, "", (Reason.INTERNAL, internal_detail("taking it in", exc)))

    def _complete(self, job_id: str, fields: Mapping[str, Any], queue: str, refusal: tuple[str, str] | None) -> None:
        """Enqueue a recorded job, or put its refusal in the outbox as an error result."""
        if queue:
            enqueue_job(self.broker, queue, job_id)
            self.store.jobs.mark_enqueued(job_id)
            log.info("job %s: queued on %s", job_id, queue)
            return
        # Recorded as refused, with its reason: it stays refused even if the settings changed since.
        reason, detail = refusal or (Reason.INTERNAL, "job refused by this node")
        log.warning("job %s refused: %s", job_id, detail)
        result = error_result(
            job_id=job_id,
            job=fields,
            node_id=self.store.node.node_id(),
            key=self.key,
            reason=reason_of(reason),
            detail=detail,
            at_ms=now_ms(),
        )
        self.store.jobs.finish(job_id, result.model_dump(mode="json"), node=self.settings.node_name)

    def _known(self, job_id: str) -> Known | None:
        record = self.store.jobs.get(job_id)
        if record is not None and record.state is JobState.QUEUED and not record.enqueued and record.job_json:
            log.info("job %s: completing an intake that was cut short", job_id)
            self._complete_or_end(job_id, record.received_job(), record.queue, _refusal(record))
            record = self.store.jobs.get(job_id)
        if record is None or record.state is None:
            log.warning("job %s: sent again, but its record cannot be read; not run again", job_id)
            return None
        return Known(job_id, record.state, record.result_json)


def _refusal(record: JobRecord) -> tuple[str, str] | None:
    """The (reason, detail) a recorded refusal carries (records of older versions have no reason)."""
    if record.refusal is None:
        return None
    return record.refusal_reason or Reason.INVALID_JOB, record.refusal
