"""Every Redis key the agent writes, in one table: what it is, its type, who writes it.

One prefix, so an operator sees at a glance what is ours and a Redis shared with something else is
never disturbed. Dramatiq keeps its own keys under DRAMATIQ_NAMESPACE; their layout is known only to
tasks/dramatiq_redis.py.
"""

PREFIX = "hn"

# Jobs ------------------------------------------------------------------------------------------
JOB = PREFIX + ":job:{job_id}"  # hash: the job record (state/records.py JobRecord names its fields)
JOB_INDEX = PREFIX + ":jobs"  # zset: job id scored by receipt time (ms); listings walk it newest first
FINISHED_INDEX = PREFIX + ":finished"  # zset: job id scored by the time its result was stored (ms)
SETTLED = PREFIX + ":settled"  # zset: full records of settled jobs, scored by settlement (ms); retention walks it
TOMBSTONES = PREFIX + ":tombstones"  # zset: compacted records (tombstones), scored by compaction (ms)
QUEUED = PREFIX + ":queued"  # set: ids of jobs waiting for a worker
RUNNING = PREFIX + ":running"  # set: ids of jobs a worker has claimed
ARTIFACTS = PREFIX + ":artifacts:{job_id}"  # hash: path -> base64 of a finished job's output file, with a TTL
CANCEL = PREFIX + ":cancel:{job_id}"  # string, with a TTL: present while a cancel is pending

# The outbox ------------------------------------------------------------------------------------
REPLY_STREAM = PREFIX + ":replies"  # stream: results waiting for the backend's ack (fields job_id, result)

# The node and its counters ---------------------------------------------------------------------
# hash: the node's identity on Docker (state/node.py), node id, registration time, bridge heartbeat,
# token refusal, bridge counters
NODE = PREFIX + ":node"
STATS = PREFIX + ":stats"  # hash: completed, failed: jobs finished (the heartbeat's counters)
STATUS_COUNTS = PREFIX + ":jobs-by-status"  # hash: final status -> jobs finished with it
REASON_COUNTS = PREFIX + ":jobs-by-reason"  # hash: reason (core/jobs.py Reason) -> jobs that ended with it
DURATIONS = PREFIX + ":durations"  # hash: "<status>|<bucket bound>", "<status>|count", "<status>|sum"
RECONCILER = PREFIX + ":reconciler"  # hash: the reconciler's passes and what they repaired (state/reconciler.py)
RECONCILER_LOCK = PREFIX + ":reconciler-lock"  # string, with a TTL: the worker whose reconciler pass is due

# Events and uptime -----------------------------------------------------------------------------
EVENTS = PREFIX + ":events"  # stream, capped (state/events.py): fields kind, at, node, data (JSON)
NOTIFY_CURSORS = PREFIX + ":notify-cursors"  # hash: receiver id -> the last event entry it got (or gave up on)
NOTIFY_COUNTS = PREFIX + ":notify-counts"  # hash: delivered, dropped, retries: the notifier's deliveries
EVENT_COUNTS = PREFIX + ":event-counts"  # hash: event kind -> events emitted (the metrics' hn_events_total)
UPTIME = PREFIX + ":uptime"  # hash: "<hour start ms>" -> ms registered in it, first_seen, total_ms

# Workers and GPUs ------------------------------------------------------------------------------
# A live worker's registration (hash, with a TTL), keyed by host AND slot: hosts sharing one Redis
# all number their slots from 0.
WORKER = PREFIX + ":worker:{host}:{slot}"
WORKERS = PREFIX + ":worker-slots"  # set: "<host>:<slot>" of every worker that has registered
GPU_LEASE = PREFIX + ":gpu-lease:{uuid}"  # string, with a TTL: the owner id of the worker holding the GPU
GPU_LOST = PREFIX + ":gpu-lost:{uuid}"  # string: a simulated GPU marked lost, and why (DEL heals it)
# hash: what `sim-gpu` injected into a simulated GPU: xids (comma-separated), foreign (processes not ours)
GPU_SIM = PREFIX + ":gpu-sim:{uuid}"
SIM_DRIVER = PREFIX + ":sim-driver:{host}"  # hash: driver, cuda: the driver a host's simulated GPUs read now
# string, with a TTL: a workload (image + script digest) whose GPU failed under it, refused on this host
QUARANTINE = PREFIX + ":quarantine:{host}:{workload}"

# The image cache (tasks/imagecache.py) -------------------------------------------------------
IMAGE_USE = PREFIX + ":image-use:{host}"  # zset: image a job pulled or ran -> last use (epoch ms), for LRU collection
VOLUME_USE = PREFIX + ":volume-use:{host}"  # zset: requirements volume -> last use (epoch ms)
PULL = PREFIX + ":pull:{job_id}"  # hash, with a TTL: a job's image pull now: image, done, total (bytes), attempt

# Queues ----------------------------------------------------------------------------------------
DRAMATIQ_NAMESPACE = "hn-dramatiq"  # the prefix of Dramatiq's own keys, apart from ours and other apps'
WAKE = PREFIX + ":wake:{queue}"  # list: tokens an enqueue pushes to wake an idle consumer of the queue
