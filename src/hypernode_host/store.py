"""The Redis key layout shared by the bridge, the workers and the CLI (constants.py names the keys).

A job record (hash) holds the job as received, its state and, once finished, its result.
The reply stream is the outbox: a result stays there until the backend acknowledges it,
so a bridge killed at any moment resends it after restart.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from hypernode_host import constants as C
from hypernode_host.jobs import JobState

# Keys of our own that constants.py does not name (the operator's view: metrics and inspection).
STATUS_COUNTS_KEY = C.PREFIX + ":jobs-by-status"  # hash: final status -> jobs finished with it
DURATIONS_KEY = C.PREFIX + ":durations"  # hash: "<status>|<bucket bound>", "<status>|count", "<status>|sum"
FINISHED_INDEX = C.PREFIX + ":finished"  # zset: job id scored by the time its result was stored (ms)

# Upper bounds (seconds) of the job duration histogram: jobs run from seconds to a day.
DURATION_BUCKETS_S: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400,
)  # fmt: skip


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fields(values: Mapping[str, str | int]) -> dict[Any, Any]:
    """A hash mapping as redis-py's (invariant) annotation wants it."""
    return dict(values)


# Create the record only if the id is new: the one place a job id is claimed, atomically.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""

# Take a job for a worker: queued, or running on a holder whose registration has expired.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
local host = redis.call('HGET', KEYS[1], 'host') or ''
local slot = redis.call('HGET', KEYS[1], 'slot') or ''
local mine = host == ARGV[1] and slot == ARGV[2]
if state == 'running' and not mine then
  -- KEYS[4] is the registration of the holder the caller saw (ARGV[5], ARGV[6]); if another
  -- worker claimed the job since, or the holder is alive, leave the job alone.
  if host ~= ARGV[5] or slot ~= ARGV[6] or redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'host', ARGV[1], 'slot', ARGV[2], 'container', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[4])
return attempt
"""

# Store a result once: the outbox entry, the record and the counters change together.
# ARGV[6] is the job's duration in seconds; ARGV[7..] the histogram's bucket bounds, ascending.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'finished' or state == 'reported' then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'result', ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'finished', 'status', ARGV[3], 'result', ARGV[2],
           'finished_at', ARGV[4], 'entry', entry)
redis.call('HDEL', KEYS[1], 'pending_result')
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[3], 1)
local seconds = tonumber(ARGV[6])
local bucket = '+Inf'
for i = 7, #ARGV do
  if seconds <= tonumber(ARGV[i]) then bucket = ARGV[i]; break end
end
redis.call('HINCRBY', KEYS[7], ARGV[3] .. '|' .. bucket, 1)
redis.call('HINCRBY', KEYS[7], ARGV[3] .. '|count', 1)
redis.call('HINCRBYFLOAT', KEYS[7], ARGV[3] .. '|sum', ARGV[6])
redis.call('ZADD', KEYS[8], ARGV[4], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    job_id: str
    result: dict[str, Any]


@dataclass(frozen=True)
class DurationStats:
    """The duration histogram of the jobs that ended with one status, as Prometheus writes it."""

    buckets: list[tuple[str, int]]  # (upper bound in s, cumulative count), ascending, the last is "+Inf"
    sum_s: float
    count: int


def _bound(value: float) -> str:
    """A bucket bound as the Lua script compares and names it (60.0 -> "60", inf -> "+Inf")."""
    return "+Inf" if math.isinf(value) else format(value, "g")


class Store:
    """Typed access to our keys in one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._record = client.register_script(_RECORD)
        self._finish = client.register_script(_FINISH)
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30))

    # Jobs ----------------------------------------------------------------------------------

    def record_job(self, job_id: str, raw: Mapping[str, Any], queue: str) -> bool:
        """Record a newly received job in state queued; False when the id is already known."""
        at = now_ms()
        fields = {
            "id": job_id,
            "job": json.dumps(dict(raw), separators=(",", ":")),
            "state": JobState.QUEUED.value,
            "queue": queue,
            "received_at": at,
            "attempt": 0,
        }
        flat = [str(x) for pair in fields.items() for x in pair]
        key = C.JOB_KEY.format(job_id=job_id)
        keys = [key, C.JOB_INDEX, C.QUEUED_SET]
        return bool(self._record(keys=keys, args=[at, *flat]))

    def mark_enqueued(self, job_id: str) -> None:
        self.redis.hset(C.JOB_KEY.format(job_id=job_id), "enqueued", 1)

    def unenqueued(self) -> list[str]:
        """Queued jobs whose Dramatiq message may never have been sent (bridge died in between)."""
        ids = sorted(cast(set[str], self.redis.smembers(C.QUEUED_SET)))
        flags = [self.redis.hget(C.JOB_KEY.format(job_id=i), "enqueued") for i in ids]
        return [i for i, flag in zip(ids, flags, strict=True) if flag is None]

    def job(self, job_id: str) -> dict[str, str] | None:
        record = cast(dict[str, str], self.redis.hgetall(C.JOB_KEY.format(job_id=job_id)))
        return record or None

    def update_job(self, job_id: str, **fields: str | int) -> None:
        self.redis.hset(C.JOB_KEY.format(job_id=job_id), mapping=_fields(fields))

    def claim_job(self, job_id: str, host: str, slot: int, container: str) -> int:
        """Mark the job running on this host's ``slot``: the attempt number (1 for the first run).

        0 when the job is already finished; -1 when another live worker holds it (its
        registration exists). A job whose holder is gone is taken over: that is how a slot's
        restarted worker, or any worker after a crash, resumes it.
        """
        held = cast(list[str | None], self.redis.hmget(C.JOB_KEY.format(job_id=job_id), ["host", "slot"]))
        held_host, held_slot = held[0] or "", held[1] or ""
        holder_key = C.WORKER_KEY.format(host=held_host, slot=held_slot)
        keys = [C.JOB_KEY.format(job_id=job_id), C.QUEUED_SET, C.RUNNING_SET, holder_key]
        args: list[str | int] = [host, slot, container, job_id, held_host, held_slot]
        return int(cast(int, self._claim(keys=keys, args=args)))

    def running_jobs(self, host: str | None = None, slot: int | None = None) -> list[str]:
        """Ids of running jobs, optionally only those held by ``host`` (and its ``slot``)."""
        ids = sorted(cast(set[str], self.redis.smembers(C.RUNNING_SET)))
        if host is None:
            return ids
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hmget(C.JOB_KEY.format(job_id=job_id), ["host", "slot"])
        holders = cast(list[list[str | None]], pipe.execute())
        return [
            job_id
            for job_id, (h, s) in zip(ids, holders, strict=True)
            if h == host and (slot is None or s == str(slot))
        ]

    def active_counts(self) -> tuple[int, int]:
        """(queued, running) job counts."""
        pipe = self.redis.pipeline()
        pipe.scard(C.QUEUED_SET)
        pipe.scard(C.RUNNING_SET)
        queued, running = pipe.execute()
        return int(queued), int(running)

    def finish_job(self, job_id: str, result: Mapping[str, Any]) -> bool:
        """Put the result in the outbox and mark the job finished; False if it already was."""
        status = str(result["status"])
        counter = "completed" if status == "completed" else "failed"
        payload = json.dumps(dict(result), separators=(",", ":"), ensure_ascii=False)
        seconds = max(int(result.get("durationMs") or 0), 0) / 1000
        keys = [
            C.JOB_KEY.format(job_id=job_id),
            C.REPLY_STREAM,
            C.STATS_KEY,
            C.QUEUED_SET,
            C.RUNNING_SET,
            STATUS_COUNTS_KEY,
            DURATIONS_KEY,
            FINISHED_INDEX,
        ]
        args: list[str | int] = [job_id, payload, status, now_ms(), counter, repr(seconds)]
        args += [_bound(b) for b in DURATION_BUCKETS_S]
        return bool(self._finish(keys=keys, args=args))

    # Outbox --------------------------------------------------------------------------------

    def outbox(self, after: str = "-", count: int = 100) -> list[OutboxEntry]:
        """Results waiting for an ack, oldest first, strictly after entry id ``after``."""
        start = "-" if after == "-" else f"({after}"
        rows = cast(list[tuple[str, dict[str, str]]], self.redis.xrange(C.REPLY_STREAM, start, "+", count))
        return [OutboxEntry(eid, f["job_id"], json.loads(f["result"])) for eid, f in rows]

    def wait_outbox(self, after: str, block_ms: int) -> list[OutboxEntry]:
        """Block up to ``block_ms`` for results newer than ``after``."""
        reply = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
            self.redis.xread({C.REPLY_STREAM: after}, count=100, block=block_ms),
        )
        if not reply:
            return []
        return [OutboxEntry(eid, f["job_id"], json.loads(f["result"])) for eid, f in reply[0][1]]

    def last_outbox_id(self) -> str:
        info = cast(list[tuple[str, Any]], self.redis.xrevrange(C.REPLY_STREAM, "+", "-", count=1))
        return info[0][0] if info else "0-0"

    def acknowledge(self, entry_id: str, job_id: str) -> None:
        """The backend has the result: drop it from the outbox, the job is reported."""
        pipe = self.redis.pipeline()
        pipe.xdel(C.REPLY_STREAM, entry_id)
        pipe.hset(C.JOB_KEY.format(job_id=job_id), mapping={"state": JobState.REPORTED.value})
        pipe.execute()

    # Cancel --------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> None:
        self.redis.set(C.CANCEL_KEY.format(job_id=job_id), "1", ex=7 * 24 * 3600)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(C.CANCEL_KEY.format(job_id=job_id)))

    # Node and counters ---------------------------------------------------------------------

    def set_node(self, **fields: str | int) -> None:
        self.redis.hset(C.NODE_KEY, mapping=_fields(fields))

    def node(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(C.NODE_KEY))

    def node_id(self) -> str | None:
        return cast(str | None, self.redis.hget(C.NODE_KEY, "node_id"))

    def incr_node_counter(self, name: str, by: int = 1) -> int:
        """Bump a counter of the node's own (reconnects, frames refused, ...)."""
        return int(self.redis.hincrby(C.NODE_KEY, name, by))

    def counters(self) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(C.STATS_KEY))
        return {k: int(v) for k, v in raw.items()}

    def status_counts(self) -> dict[str, int]:
        """Finished jobs by final status (completed, failed, timeout, cancelled, error)."""
        raw = cast(dict[str, str], self.redis.hgetall(STATUS_COUNTS_KEY))
        return {k: int(v) for k, v in raw.items()}

    def durations(self) -> dict[str, DurationStats]:
        """The job duration histogram of each final status, with cumulative bucket counts."""
        raw = cast(dict[str, str], self.redis.hgetall(DURATIONS_KEY))
        statuses = sorted({field.partition("|")[0] for field in raw})
        result = {}
        for status in statuses:
            running = 0
            buckets = []
            for bound in (*DURATION_BUCKETS_S, float("inf")):
                running += int(raw.get(f"{status}|{_bound(bound)}", 0))
                buckets.append((_bound(bound), running))
            result[status] = DurationStats(
                buckets=buckets, sum_s=float(raw.get(f"{status}|sum", 0)), count=int(raw.get(f"{status}|count", 0))
            )
        return result
