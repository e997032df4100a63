"""Names shared by the bridge, the workers and the CLI: queues, limits (Redis keys: state/keys.py)."""

# Dramatiq queue names (dramatiq allows letters, digits, '.', '_' and '-').
CPU_QUEUE = "hn-cpu"
GPU_QUEUE_TEMPLATE = "hn-gpu{count}"

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
