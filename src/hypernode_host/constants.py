"""Names shared by the bridge, the workers and the CLI: Redis keys, queues, limits."""

# Redis keys. One prefix so that an operator can see at a glance what is ours,
# and so that a Redis shared with something else is never disturbed.
PREFIX = "hn"
JOB_KEY = PREFIX + ":job:{job_id}"  # hash: the job record
JOB_INDEX = PREFIX + ":jobs"  # zset: job id scored by receipt time (ms)
REPLY_STREAM = PREFIX + ":replies"  # stream: results waiting for the backend's ack (the outbox)
NODE_KEY = PREFIX + ":node"  # hash: nodeId, registration state, bridge heartbeat
QUEUED_SET = PREFIX + ":queued"  # set: ids of jobs waiting for a worker
RUNNING_SET = PREFIX + ":running"  # set: ids of jobs a worker has started
STATS_KEY = PREFIX + ":stats"  # hash: counters (completed, failed, ...)
CANCEL_KEY = PREFIX + ":cancel:{job_id}"  # string: present while a cancel is pending
# A live worker's registration (hash, with a TTL), keyed by host AND slot: hosts sharing one
# Redis all number their slots from 0 (gpu/registry.py reads and writes these).
WORKER_KEY = PREFIX + ":worker:{host}:{slot}"
WORKERS_SET = PREFIX + ":worker-slots"  # set of "<host>:<slot>" that have registered

# Dramatiq queue names (dramatiq allows letters, digits, '.', '_' and '-').
DRAMATIQ_NAMESPACE = "hn-dramatiq"  # Dramatiq's own keys, apart from ours and from other apps'
CPU_QUEUE = "hn-cpu"
GPU_QUEUE_TEMPLATE = "hn-gpu{count}"
ACTOR_NAME = "run_job"

# Job limits that are not settings: they bound what a hostile backend can make us hold.
MAX_JOB_ID_LEN = 64
MAX_SCRIPT_BYTES = 1 << 20  # 1 MiB of Python source is plenty; bigger payloads belong in datasets
MAX_COMMAND_BYTES = 64 << 10
MAX_ENV_ENTRIES = 64
MAX_ENV_VALUE_BYTES = 16 << 10
MAX_FRAME_BYTES = 2 << 20  # WebSocket max_size: the largest legitimate frame is a job with its script

# Container contract defaults (research/reliability.md 1.2).
JOB_USER = "65534:65534"  # nobody:nogroup, whatever the image says
SCRIPT_DIR = "/job"
SCRIPT_PATH = "/job/script.py"
WORK_DIR = "/work"
PIDS_LIMIT = 1024
TMP_SIZE = "256m"
WORK_SIZE = "256m"
SHM_SIZE = 256 << 20
NOFILE_LIMIT = 4096
STOP_GRACE_S = 5
WAIT_SLICE_S = 1.0

# Labels every job container carries: they are how a restarted worker finds its containers.
LABEL_JOB = "hypernode.job_id"
LABEL_NODE = "hypernode.node"
LABEL_WORKER = "hypernode.worker"
LABEL_ATTEMPT = "hypernode.attempt"
LABEL_GPUS = "hypernode.gpus"

DEFAULT_MEMORY = "8g"
DEFAULT_CPUS = 2.0
COMPLETED_MARKER_RE = r"(?i)(?<!\w)(completed|finished|success|done|exit code 0)(?!\w)|✅"
