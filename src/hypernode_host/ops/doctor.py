"""Is this host set up right? ``doctor`` is the operator's pre-flight: the daemon, NVIDIA runtime and
toolkit settings that decide job isolation, Redis durability, disk, images and the node's own files,
each with the fix when it is wrong.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypernode_host.core.admission import open_patterns
from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import GpuInfo, SlotState
from hypernode_host.errors import ConfigError, ContainerError, DriverMismatch, GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.capacity import node_driver
from hypernode_host.gpu.health import DRIVER_FIX
from hypernode_host.gpu.inventory import discover
from hypernode_host.ops.check import REDIS_TIMEOUT_S, docker_fix, redis_fix, shown_url
from hypernode_host.ops.findings import Finding, Level
from hypernode_host.settings import Settings
from hypernode_host.state import RedisError, RedisRefused, Store, redis_url
from hypernode_host.state.connect import exposure

if TYPE_CHECKING:  # docker-py is imported only by the checks that talk to the engine
    from hypernode_host.tasks.containers import DockerRuntime

TOOLKIT_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")
ENVVAR_SWITCH = "accept-nvidia-visible-devices-envvar-when-unprivileged"
MIN_TOOLKIT = (1, 17, 8)  # CVE-2024-0132 (fixed in 1.16.2) and CVE-2025-23266 (fixed in 1.17.8)
MIN_DOCKER = (20, 10)
DISK_FAIL_BYTES = 5 << 30
DISK_WARN_BYTES = 20 << 30  # a CUDA image alone is several GiB


def run_doctor(
    settings: Settings, toolkit_config: Path = TOOLKIT_CONFIG, runtime: DockerRuntime | None = None
) -> list[Finding]:
    """Every pre-flight check, in the order an operator fixes them."""
    from hypernode_host.tasks.containers import DockerRuntime

    runtime = runtime or DockerRuntime()
    findings: list[Finding] = []
    try:
        gpus = discover(settings)
    except GpuError as exc:
        gpus = []
        findings.append(Finding("gpus", Level.FAIL, str(exc)))
    else:
        findings.append(describe_gpus(gpus))
    real_gpus = any(not g.simulated for g in gpus)
    driver = check_driver(settings, gpus)
    if driver is not None:
        findings.append(driver)
    info = _docker_info(runtime)
    if info is None:
        findings.append(Finding("docker", Level.FAIL, "the Docker engine does not answer", docker_fix()))
    else:
        findings += docker_findings(info, real_gpus)
        findings.append(check_disk(info.get("DockerRootDir", "/var/lib/docker")))
        findings += check_images(runtime, settings, bool(gpus))
    findings += check_toolkit(toolkit_config, real_gpus, info is not None and info.get("DefaultRuntime") == "nvidia")
    if real_gpus:
        findings.append(check_toolkit_version())
    findings.append(check_image_patterns(settings))
    findings += check_redis(settings)
    findings += check_node_files(settings)
    return findings


def check_image_patterns(settings: Settings) -> Finding:
    """Allow-list entries a stranger can publish a matching image under: its code then runs as a job."""
    found = open_patterns(settings.image_patterns())
    if not found:
        return Finding("image-patterns", Level.OK, f"{len(settings.image_patterns())} entries, none open to anyone")
    detail = f"anyone may publish an image that matches {', '.join(found)}"
    fix = "name registries and namespaces you control exactly, or pin digests (name@sha256:...) in HN_ALLOWED_IMAGES"
    return Finding("image-patterns", Level.WARN, detail, fix)


def _docker_info(runtime: DockerRuntime) -> dict[str, Any] | None:
    try:
        return runtime.info()
    except ContainerError:
        return None


def check_driver(settings: Settings, gpus: Sequence[GpuInfo]) -> Finding | None:
    """The GPU driver: NVML consistent with the loaded driver, and no worker draining for a driver change.

    None on a host without GPUs (or NVML), where there is no driver to judge.
    """
    if settings.simulate_gpus is None:
        try:
            version, cuda = nvml.driver_versions()
        except DriverMismatch as exc:  # discovery found no GPU because of it: say so, with the fix
            return Finding("gpu-driver", Level.FAIL, str(exc), DRIVER_FIX)
        except GpuError:
            return None
        driver = Driver(version, cuda)
    elif not gpus:
        return None
    else:
        driver = node_driver(gpus)
    try:
        with Store.open(settings, timeout_s=REDIS_TIMEOUT_S) as store:
            draining = [
                r for r in store.registry.all() if r.host == settings.node_name and r.state is SlotState.DRAINING
            ]
    except RedisError:
        draining = []  # the redis finding says why
    if draining:
        detail = draining[0].health.partition("; fix: ")[0]
        return Finding("gpu-driver", Level.FAIL, f"{len(draining)} slot(s) draining: {detail}", DRIVER_FIX)
    return Finding("gpu-driver", Level.OK, f"driver {driver}")


def describe_gpus(gpus: Sequence[GpuInfo]) -> Finding:
    if not gpus:
        return Finding("gpus", Level.OK, "none found: this node runs CPU jobs only")
    names = ", ".join(f"{g.index}: {g.name} {g.memory_total_mb} MiB" for g in gpus)
    if any(g.simulated for g in gpus):
        return Finding("gpus", Level.WARN, f"simulated ({names})", "unset HN_SIMULATE_GPUS outside tests and demos")
    return Finding("gpus", Level.OK, names)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def docker_findings(info: dict[str, Any], real_gpus: bool) -> list[Finding]:
    """The engine's version, live-restore, and the runtime settings that decide who gets a GPU."""
    version = str(info.get("ServerVersion", "unknown"))
    findings = [
        Finding("docker", Level.OK, f"engine {version}")
        if _version_tuple(version) >= MIN_DOCKER
        else Finding("docker", Level.WARN, f"engine {version} is old", "upgrade Docker to 20.10 or newer")
    ]
    if info.get("LiveRestoreEnabled"):
        findings.append(Finding("live-restore", Level.OK, "on: jobs survive a dockerd restart"))
    else:
        findings.append(
            Finding(
                "live-restore",
                Level.WARN,
                "off: restarting dockerd kills every running job",
                'set "live-restore": true in /etc/docker/daemon.json and reload dockerd',
            )
        )
    options = [str(option) for option in info.get("SecurityOptions") or ()]
    if any(option.startswith("name=seccomp") for option in options):
        findings.append(Finding("seccomp", Level.OK, "supported: every job runs under the project's profile"))
    else:
        detail = "the engine has no seccomp support: workers refuse to start (jobs run only under the profile)"
        findings.append(Finding("seccomp", Level.FAIL, detail, "use a kernel and a Docker built with seccomp"))
    runtimes = sorted(info.get("Runtimes") or {})
    if "nvidia" in runtimes:
        findings.append(Finding("nvidia-runtime", Level.OK, "registered with Docker"))
    elif real_gpus:
        fix = "install nvidia-container-toolkit, then: nvidia-ctk runtime configure --runtime=docker"
        findings.append(Finding("nvidia-runtime", Level.FAIL, f"not registered (runtimes: {', '.join(runtimes)})", fix))
    else:
        findings.append(Finding("nvidia-runtime", Level.OK, "not needed: no GPUs"))
    if info.get("DefaultRuntime") == "nvidia":
        detail = "nvidia is the default runtime: an image with NVIDIA_VISIBLE_DEVICES=all reaches every GPU"
        fix = 'remove "default-runtime" from /etc/docker/daemon.json (jobs ask for their GPUs by UUID)'
        findings.append(Finding("default-runtime", Level.FAIL, detail, fix))
    else:
        findings.append(Finding("default-runtime", Level.OK, str(info.get("DefaultRuntime", "runc"))))
    return findings


def check_toolkit(path: Path, real_gpus: bool, nvidia_default: bool) -> list[Finding]:
    """The toolkit switch that lets a container's own NVIDIA_VISIBLE_DEVICES pick GPUs."""
    fix = f"set {ENVVAR_SWITCH} = false in {path}"
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if not real_gpus:
            return [Finding("nvidia-toolkit", Level.OK, "not installed: no GPUs")]
        detail = f"{path} not found (in a container, mount it read-only to check it)"
        return [Finding("nvidia-toolkit", Level.WARN, detail)]
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [Finding("nvidia-toolkit", Level.WARN, f"cannot read {path}: {exc}")]
    if not config.get(ENVVAR_SWITCH, True):  # the toolkit's default is true
        return [Finding("nvidia-toolkit", Level.OK, f"{ENVVAR_SWITCH} = false")]
    if nvidia_default:
        detail = f"{ENVVAR_SWITCH} is on and nvidia is the default runtime: any image can ask for every GPU"
        return [Finding("nvidia-toolkit", Level.FAIL, detail, fix)]
    detail = f"{ENVVAR_SWITCH} is on: safe only while nvidia is not the default runtime"
    return [Finding("nvidia-toolkit", Level.WARN, detail, fix)]


def check_toolkit_version() -> Finding:
    fix = "upgrade nvidia-container-toolkit to 1.17.8 or newer"
    binary = shutil.which("nvidia-ctk")
    if binary is None:
        return Finding("toolkit-version", Level.WARN, "nvidia-ctk not found: cannot tell the toolkit version", fix)
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("toolkit-version", Level.WARN, f"nvidia-ctk --version failed: {exc}", fix)
    return judge_toolkit_version(out)


def judge_toolkit_version(output: str) -> Finding:
    """From ``nvidia-ctk --version`` output: fail below MIN_TOOLKIT (container escapes)."""
    match = re.search(r"version\s+(\d+\.\d+\.\d+)", output)
    if match is None:
        return Finding("toolkit-version", Level.WARN, "cannot read the version from nvidia-ctk")
    version = match.group(1)
    if _version_tuple(version) < MIN_TOOLKIT:
        detail = f"{version} has container escapes (CVE-2024-0132, CVE-2025-23266)"
        return Finding("toolkit-version", Level.FAIL, detail, "upgrade nvidia-container-toolkit to 1.17.8 or newer")
    return Finding("toolkit-version", Level.OK, version)


def check_disk(root: str) -> Finding:
    """Free space where Docker keeps images and containers."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return Finding("disk", Level.WARN, f"cannot see Docker's data root {root} from here (run doctor on the host)")
    gib = free / (1 << 30)
    if free < DISK_FAIL_BYTES:
        return Finding("disk", Level.FAIL, f"{gib:.1f} GiB free under {root}", "free space: docker system prune")
    if free < DISK_WARN_BYTES:
        return Finding("disk", Level.WARN, f"{gib:.1f} GiB free under {root}", "keep 20 GiB free for job images")
    return Finding("disk", Level.OK, f"{gib:.0f} GiB free under {root}")


def check_images(runtime: DockerRuntime, settings: Settings, any_gpus: bool) -> list[Finding]:
    images = [settings.job_image] + ([settings.gpu_image()] if any_gpus else [])
    findings = []
    for image in dict.fromkeys(images):
        try:
            present = runtime.has_image(image)
        except ContainerError as exc:
            findings.append(Finding("image", Level.WARN, f"{image}: {exc}"))
            continue
        if present:
            findings.append(Finding("image", Level.OK, f"{image} present"))
        else:
            detail = f"{image} absent: the first job that needs it waits for the pull"
            findings.append(Finding("image", Level.WARN, detail, f"docker pull {image}"))
    return findings


def check_redis(settings: Settings) -> list[Finding]:
    """AOF on and no eviction: otherwise a restart or memory pressure silently loses jobs and results."""
    store = Store.open(settings, timeout_s=REDIS_TIMEOUT_S)
    try:
        config = store.server_config()
    except RedisRefused as exc:
        return [Finding("redis", Level.WARN, f"cannot read its configuration: {exc}")]
    except RedisError as exc:
        return [Finding("redis", Level.FAIL, f"no answer from {shown_url(settings)}: {exc}", redis_fix(settings))]
    finally:
        store.close()
    appendonly, policy = config.appendonly, config.maxmemory_policy
    findings = [Finding("redis", Level.OK, f"answers at {shown_url(settings)}"), check_redis_auth(settings)]
    if appendonly == "yes":
        findings.append(Finding("redis-aof", Level.OK, "appendonly yes"))
    else:
        fix = "run redis-server with --appendonly yes"
        findings.append(Finding("redis-aof", Level.FAIL, "appendonly no: a restart loses queued jobs and results", fix))
    if policy == "noeviction":
        findings.append(Finding("redis-eviction", Level.OK, "maxmemory-policy noeviction"))
    else:
        detail = f"maxmemory-policy {policy}: Redis may evict queued jobs under memory pressure"
        findings.append(
            Finding("redis-eviction", Level.FAIL, detail, "run redis-server with --maxmemory-policy noeviction")
        )
    return findings


AUTH_FIX = (
    "give Redis a password (requirepass; compose: REDIS_PASSWORD in .env) and put it in HN_REDIS_URL "
    "(redis://:PASSWORD@host:6379/0, or rediss:// for TLS)"
)


def check_redis_auth(settings: Settings) -> Finding:
    """Redis is the whole trust boundary: whoever reaches it reads every job's script and env, enqueues
    jobs and forges results. Fail when it lets anyone in from the network; warn when only from here."""
    try:
        seen = exposure(redis_url(settings), REDIS_TIMEOUT_S)
    except RedisError as exc:
        return Finding("redis-auth", Level.WARN, f"cannot tell whether it requires a password: {exc}")
    if seen is None:
        return Finding("redis-auth", Level.WARN, "cannot tell whether it requires a password: no answer")
    if not seen.anonymous:
        return Finding("redis-auth", Level.OK, "a client without the password is refused")
    if seen.loopback:
        detail = f"{seen.where} lets in clients without a password: any local process can read and forge jobs"
        return Finding("redis-auth", Level.WARN, detail, AUTH_FIX)
    detail = f"{seen.where} lets in clients without a password from the network: anyone who reaches it owns the node"
    return Finding("redis-auth", Level.FAIL, detail, AUTH_FIX)


def check_token(settings: Settings) -> Finding:
    """A token is there to read (HN_NODE_TOKEN_FILE, else HN_NODE_TOKEN); a token file only its owner reads."""
    try:
        settings.token()
    except ConfigError as exc:
        return Finding("token", Level.FAIL, str(exc), "copy it from the Hypernode dashboard")
    path = settings.node_token_file
    if path is None:
        return Finding("token", Level.OK, "HN_NODE_TOKEN is set")
    try:
        shared = path.stat().st_mode & 0o077
    except OSError as exc:  # replaced between the two looks: a token is there, its mode is not known
        return Finding("token", Level.WARN, f"{path}: {exc.strerror}", "keep the token file in place")
    if shared:
        return Finding("token", Level.WARN, f"{path} is readable by other users", f"chmod 600 {path}")
    return Finding("token", Level.OK, f"{path} holds a token")


def check_node_files(settings: Settings) -> list[Finding]:
    """The token is set, and the node key, if it exists yet, is readable by its owner only."""
    findings = [check_token(settings)]
    path = settings.key_file
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        findings.append(Finding("node-key", Level.OK, f"{path} is created at the first start"))
        return findings
    except OSError as exc:
        findings.append(Finding("node-key", Level.FAIL, f"{path}: {exc}"))
        return findings
    if mode & 0o077:
        findings.append(
            Finding("node-key", Level.FAIL, f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}")
        )
    else:
        findings.append(Finding("node-key", Level.OK, f"{path} (mode {mode:o})"))
    return findings
