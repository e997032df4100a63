"""Job records (keys.JOB) and their indexes: the one atomic claim of a job id, a worker's claim of a
job, its result stored once, retention, and the reads listings need.

Retention: a settled job (acknowledged or rejected: keys.SETTLED) keeps its full record for
HN_JOB_RETENTION, then ``compact`` shrinks it to a tombstone of a few hundred bytes (id, final state
and status, SHA-256 of the result, its times) that still stops a second run and still answers the
job id sent again; HN_TOMBSTONE_RETENTION later ``forget`` removes the tombstone and the job's index
entries. A job that is queued, running or finished with its result still in the outbox is never
touched: so Redis holds the unsettled jobs plus a bounded window of settled ones.

Listings cost a few pipelined round trips whatever the backlog: queued and running jobs come from
their sets, finished ones from the index of finished jobs (newest result first), and a listing
reads only the fields it shows (never the job's script). A filtered walk reads at most SCAN_LIMIT
records, so it stays fast on a huge backlog.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import redis

from hypernode_host.core.clock import now_ms
from hypernode_host.core.events import Kind, finished_event
from hypernode_host.core.jobs import JobState, Status
from hypernode_host.state import keys, scripts
from hypernode_host.state.connect import unless_refused
from hypernode_host.state.events import Events
from hypernode_host.state.records import JobRecord
from hypernode_host.state.stats import DURATION_BUCKETS_S, bucket_bound

# What the reconciler reads of each queued or running job (never its script or result).
ACTIVE = ("state", "queue", "host", "slot", "received_at", "enqueued", "refusal", "refusal_reason", "pending_result")
LISTED = (
    "state", "status", "queue", "slot", "attempt", "received_at", "finished_at", "result", "rejection", "compacted_at",
    "progress",
)  # fmt: skip
PAGE = 1000  # most records read per pipeline while filtering the job index
SCAN_LIMIT = 20_000  # newest records a filtered listing looks at
SET_LIMIT = 10_000  # a queued/running set up to this size is read whole and sorted by receipt
RETENTION_BATCH = 500  # records compacted (or tombstones forgotten) per call


def _key(job_id: str) -> str:
    return keys.JOB.format(job_id=job_id)


class Jobs:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._record = scripts.register(client, "record")
        self._claim = scripts.register(client, "claim")
        self._finish = scripts.register(client, "finish")
        self._compact = scripts.register(client, "compact")
        self._forget = scripts.register(client, "forget")
        self._events = Events(client)

    # A job's life ----------------------------------------------------------------------------

    def record(self, job_id: str, raw: Mapping[str, Any], queue: str, refusal: tuple[str, str] | None = None) -> bool:
        """Record a newly received job in state queued (on ``queue``, or "" with the ``refusal`` it gets:
        its reason and one-line detail); False when the id is already known."""
        at = now_ms()
        fields: dict[str, str | int] = {
            "id": job_id,
            "job": json.dumps(dict(raw), separators=(",", ":")),
            "state": JobState.QUEUED.value,
            "queue": queue,
            "received_at": at,
            "attempt": 0,
        }
        if refusal is not None:
            fields["refusal_reason"], fields["refusal"] = refusal
        flat = [str(x) for pair in fields.items() for x in pair]
        return bool(self._record(keys=[_key(job_id), keys.JOB_INDEX, keys.QUEUED], args=[at, *flat]))

    def gpus(self, job_id: str) -> tuple[str, ...]:
        """The GPUs the job ran on, as its finish kept them (none for a CPU job)."""
        value = cast(str | None, self._client.hget(_key(job_id), "gpus"))
        return tuple(g for g in (value or "").split(",") if g)

    def mark_enqueued(self, job_id: str) -> None:
        self._client.hset(_key(job_id), "enqueued", 1)

    def unenqueued(self) -> list[str]:
        """Queued jobs whose Dramatiq message may never have been sent (the bridge died in between)."""
        ids = sorted(cast(set[str], self._client.smembers(keys.QUEUED)))
        flags = [self._client.hget(_key(i), "enqueued") for i in ids]
        return [i for i, flag in zip(ids, flags, strict=True) if flag is None]

    def get(self, job_id: str) -> JobRecord | None:
        fields = cast(dict[str, str], self._client.hgetall(_key(job_id)))
        return JobRecord.parse(job_id, fields) if fields else None

    def claim(self, job_id: str, host: str, slot: int, container: str) -> int:
        """Mark the job running on this host's ``slot``: the attempt number (1 for the first run).

        0 when the job is already finished; -1 when another live worker holds it (its
        registration exists). A job whose holder is gone is taken over: that is how a slot's
        restarted worker, or any worker after a crash, resumes it.
        """
        held = cast(list[str | None], self._client.hmget(_key(job_id), ["host", "slot"]))
        held_host, held_slot = held[0] or "", held[1] or ""
        holder = keys.WORKER.format(host=held_host, slot=held_slot)
        args: list[str | int] = [host, slot, container, job_id, held_host, held_slot]
        return int(cast(int, self._claim(keys=[_key(job_id), keys.QUEUED, keys.RUNNING, holder], args=args)))

    def set_progress(self, job_id: str, progress: Mapping[str, Any]) -> None:
        """Record the latest progress a running job reported (the record's ``progress``)."""
        with unless_refused():
            self._client.hset(_key(job_id), "progress", json.dumps(dict(progress), separators=(",", ":")))

    def keep_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        """Keep a result in the record before its container is removed (JobRecord.pending_json)."""
        self._client.hset(_key(job_id), "pending_result", json.dumps(dict(result), separators=(",", ":")))

    def finish(self, job_id: str, result: Mapping[str, Any], *, gpus: Sequence[str] = (), node: str = "") -> bool:
        """Put the result in the outbox and mark the job finished; False if it already was.

        The first finish also keeps the job's ``gpus`` in its record and emits job.finished (from ``node``).
        """
        status = str(result["status"])
        counter = "completed" if status == Status.COMPLETED else "failed"
        seconds = max(int(result.get("durationMs") or 0), 0) / 1000
        touched = [
            _key(job_id),
            keys.REPLY_STREAM,
            keys.STATS,
            keys.QUEUED,
            keys.RUNNING,
            keys.STATUS_COUNTS,
            keys.DURATIONS,
            keys.FINISHED_INDEX,
        ]
        payload = json.dumps(dict(result), separators=(",", ":"), ensure_ascii=False)  # sent as is: UTF-8
        args: list[str | int] = [job_id, payload, status, now_ms(), counter, repr(seconds)]
        args += [bucket_bound(b) for b in DURATION_BUCKETS_S]
        if not self._finish(keys=touched, args=args):
            return False
        if gpus:
            self._client.hset(_key(job_id), "gpus", ",".join(gpus))
        reason = result.get("reason")
        if isinstance(reason, str) and reason:
            # Beside the Lua script, which others' counters share: a counter, so a lost increment
            # (the process dying between the two calls) costs one count, never a result.
            self._client.hincrby(keys.REASON_COUNTS, reason, 1)
        self._events.emit(Kind.JOB_FINISHED, finished_event(job_id, result, gpus), node=node)
        return True

    # Retention ---------------------------------------------------------------------------------

    def compact(self, settled_before_ms: int, at_ms: int, limit: int = RETENTION_BATCH) -> int:
        """Shrink to tombstones (compact.lua) the records of up to ``limit`` jobs settled before
        ``settled_before_ms``, oldest first; how many it shrank."""
        ids = cast(list[str], self._client.zrangebyscore(keys.SETTLED, "-inf", settled_before_ms, start=0, num=limit))
        if not ids:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(_key(job_id), "result")
        results = cast(list[str | None], pipe.execute())
        pipe = self._client.pipeline(transaction=False)
        for job_id, result in zip(ids, results, strict=True):
            digest = hashlib.sha256(result.encode()).hexdigest() if result is not None else ""
            self._compact(keys=[_key(job_id), keys.SETTLED, keys.TOMBSTONES], args=[job_id, at_ms, digest], client=pipe)
        return sum(int(done) for done in pipe.execute())

    def forget(self, compacted_before_ms: int, limit: int = RETENTION_BATCH) -> int:
        """Remove up to ``limit`` tombstones made before ``compacted_before_ms`` and their index entries."""
        ids = cast(
            list[str], self._client.zrangebyscore(keys.TOMBSTONES, "-inf", compacted_before_ms, start=0, num=limit)
        )
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            touched = [_key(job_id), keys.JOB_INDEX, keys.FINISHED_INDEX, keys.TOMBSTONES]
            self._forget(keys=touched, args=[job_id], client=pipe)
        return sum(int(done) for done in pipe.execute()) if ids else 0

    def retained(self) -> tuple[int, int]:
        """(settled jobs with their full record, tombstones)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(keys.SETTLED)
        pipe.zcard(keys.TOMBSTONES)
        full, tombstones = pipe.execute()
        return int(full), int(tombstones)

    # Reads -------------------------------------------------------------------------------------

    def running(self, host: str | None = None, slot: int | None = None) -> list[str]:
        """Ids of running jobs, optionally only those held by ``host`` (and its ``slot``)."""
        ids = sorted(cast(set[str], self._client.smembers(keys.RUNNING)))
        if host is None:
            return ids
        pipe = self._client.pipeline(transaction=False)  # reads: no MULTI, which Redis refuses when out of memory
        for job_id in ids:
            pipe.hmget(_key(job_id), ["host", "slot"])
        holders = cast(list[list[str | None]], pipe.execute())
        return [
            job_id
            for job_id, (h, s) in zip(ids, holders, strict=True)
            if h == host and (slot is None or s == str(slot))
        ]

    def active(self) -> list[tuple[JobRecord, bool]]:
        """Every queued or running job, with ACTIVE's fields only, and whether its holder (the worker
        whose claim it carries, if any) has a live registration; three round trips."""
        pipe = self._client.pipeline(transaction=False)
        pipe.smembers(keys.QUEUED)
        pipe.smembers(keys.RUNNING)
        queued, running = cast(list[set[str]], pipe.execute())
        ids = sorted(queued | running)
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(_key(job_id), *ACTIVE)
        records = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            fields = {name: value for name, value in zip(ACTIVE, values, strict=True) if value is not None}
            if fields.get("state") in (JobState.QUEUED, JobState.RUNNING):  # else it moved on meanwhile
                records.append(JobRecord.parse(job_id, fields))
        pipe = self._client.pipeline(transaction=False)
        for record in records:
            pipe.exists(keys.WORKER.format(host=record.host or "", slot="" if record.slot is None else record.slot))
        alive = [bool(found) and bool(record.host) for record, found in zip(records, pipe.execute(), strict=True)]
        return list(zip(records, alive, strict=True))

    def active_counts(self) -> tuple[int, int]:
        """(queued, running) job counts."""
        pipe = self._client.pipeline(transaction=False)  # reads: no MULTI, which Redis refuses when out of memory
        pipe.scard(keys.QUEUED)
        pipe.scard(keys.RUNNING)
        queued, running = pipe.execute()
        return int(queued), int(running)

    def total(self) -> int:
        """Every job this Redis has a record of."""
        return int(self._client.zcard(keys.JOB_INDEX))

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState | None]:
        """Each job's state now (None: no record)."""
        ids = list(dict.fromkeys(job_ids))
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(_key(job_id), "state")
        found = cast(list[str | None], pipe.execute())
        return {i: JobRecord.parse(i, {"state": s}).state if s else None for i, s in zip(ids, found, strict=True)}

    def recent(self, limit: int, state: JobState | None = None, status: Status | None = None) -> list[JobRecord]:
        """The newest ``limit`` jobs, optionally only those in ``state`` or ended with ``status``, with
        the fields of LISTED only. Unfiltered, it reads exactly ``limit`` records."""
        ids: list[str] | None
        if state is None and status is None:
            ids = cast(list[str], self._client.zrevrange(keys.JOB_INDEX, 0, limit - 1))
        elif state in (JobState.QUEUED, JobState.RUNNING):
            if status is not None:
                return []  # only finished jobs have a status
            ids = self._newest_in(keys.QUEUED if state is JobState.QUEUED else keys.RUNNING, limit)
            if ids is None:
                ids = self._scan(keys.JOB_INDEX, limit, lambda s, _: s == state)
        else:
            ids = self._scan(keys.FINISHED_INDEX, limit, lambda s, t: state in (None, s) and status in (None, t))
        return self._listed(ids)

    def _newest_in(self, key: str, limit: int) -> list[str] | None:
        """Newest first from a small set; None when the set is too big to sort here."""
        if int(self._client.scard(key)) > SET_LIMIT:
            return None
        members = sorted(cast(set[str], self._client.smembers(key)))
        if not members:
            return []
        scores = self._client.zmscore(keys.JOB_INDEX, members)
        ranked = sorted(zip(members, scores, strict=True), key=lambda pair: pair[1] or 0, reverse=True)
        return [job_id for job_id, _ in ranked[:limit]]

    def _scan(self, index: str, limit: int, keep: Callable[[str | None, str | None], bool]) -> list[str]:
        """Ids from ``index`` (newest first) whose record's (state, status) ``keep`` accepts."""
        found: list[str] = []
        page = min(max(2 * limit, 100), PAGE)  # small first pages: the newest records usually suffice
        start = 0
        while start < SCAN_LIMIT:
            ids = cast(list[str], self._client.zrevrange(index, start, start + page - 1))
            pipe = self._client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(_key(job_id), "state", "status")
            for job_id, (state, status) in zip(ids, pipe.execute(), strict=True):
                if keep(state, status):
                    found.append(job_id)
                    if len(found) == limit:
                        return found
            if len(ids) < page:
                break
            start += page
            page = min(page * 2, PAGE)
        return found

    def _listed(self, ids: Sequence[str]) -> list[JobRecord]:
        pipe = self._client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(_key(job_id), *LISTED)
        records = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            fields = {name: value for name, value in zip(LISTED, values, strict=True) if value is not None}
            if "state" in fields:  # else removed between the index read and now
                records.append(JobRecord.parse(job_id, fields))
        return records
