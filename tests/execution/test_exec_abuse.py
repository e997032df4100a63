"""The abuse suite: hostile jobs and faults, each a real job in a real container on a real node.

Every test asserts the job's status, that the host and the agent are unharmed (node up and
connected, every worker alive) and that no container is left behind. The jobs report what
they tried as JSON on their last line.

The tests share one node and run in file order: the first SIGKILLs a worker mid-job, the
last waits for Dramatiq to redeliver that worker's message (after the broker's heartbeat
timeout, which the tests in between mostly cover) and checks that the redelivery changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from execsupport import Node, RssSampler, host_processes_with, proc_status, running_node

from hypernode_host.core.slots import CPU_QUEUE
from hypernode_host.state import keys
from hypernode_host.tasks.broker import HEARTBEAT_TIMEOUT_MS, build_broker, enqueue_job
from hypernode_host.tasks.containers import PIDS_LIMIT, DockerRuntime
from hypernode_host.tasks.runner import container_name
from support import job_containers, wait_for

MIB = 1 << 20
# Dramatiq requeues a dead worker's message once its heartbeat is this old and a consumer's
# maintenance (a 5 % chance per Redis command) runs: allow plenty beyond the timeout.
REDELIVERY_WAIT_S = HEARTBEAT_TIMEOUT_MS / 1000 + 60
STEPS_SCRIPT = (
    "import time\nfor i in range({n}):\n    print(f'step {{i}}', flush=True)\n    time.sleep(0.5)\nprint('done')\n"
)
LONG_SCRIPT = "import time\nprint('working', flush=True)\ntime.sleep(300)\n"


class Killed:
    """What the crash test leaves for the redelivery test."""

    job_id = ""
    at = 0.0
    result: dict[str, Any] = {}  # noqa: RUF012 - filled once by the first test


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime) -> Iterator[Node]:
    with running_node() as running:
        yield running


def duplicates_ignored(node: Node, job_id: str) -> int:
    return node.process.output().count(f"job {job_id}: already finished; duplicate delivery ignored")


def created_containers(name: str, since: float) -> list[str]:
    """Names of containers Docker created with ``name`` since ``since`` (from the engine's event log)."""
    client = docker.from_env()
    try:
        events = client.events(
            since=int(since), until=int(time.time()) + 1, filters={"event": "create", "type": "container"}, decode=True
        )
        return [e["Actor"]["Attributes"]["name"] for e in events if e["Actor"]["Attributes"].get("name") == name]
    finally:
        client.close()


def report(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a job printed on its last line."""
    value: dict[str, Any] = json.loads(result["logs"].strip().splitlines()[-1])
    return value


def test_a_worker_killed_mid_job_is_replaced_and_its_successor_finishes_the_job(node: Node) -> None:
    job_id = node.submit(script=STEPS_SCRIPT.format(n=12), timeout=60)
    slot = node.slot_running(job_id)
    victim = node.worker_pid(slot)
    wait_for(lambda: job_containers(node.name), timeout=30)
    # some output has been written through the victim's attach stream
    wait_for(lambda: b"step 1" in DockerRuntime().output_tail(job_containers(node.name)[0], 20), timeout=60)

    os.kill(victim, signal.SIGKILL)
    Killed.job_id, Killed.at = job_id, time.monotonic()

    # Within seconds of the job's end, far sooner than Dramatiq's redelivery after the heartbeat timeout.
    result = node.result(job_id, wait_s=HEARTBEAT_TIMEOUT_MS / 1000 - 5)
    Killed.result = result
    assert result["status"] == "completed"
    assert result["logs"].split("\n")[:2] == ["step 0", "step 1"]  # the whole output, from the log driver
    assert result["logs"].rstrip().endswith("step 11\ndone")
    assert node.worker_pid(slot) != victim
    assert f"job {job_id}: reattaching to container" in node.process.output()
    assert node.record(job_id)["attempt"] == "2"  # the victim's attempt, then its successor's
    assert len(node.backend.results(job_id)) == 1
    node.assert_unharmed()


def test_a_message_delivered_again_never_starts_a_second_container(node: Node) -> None:
    job_id = Killed.job_id
    assert job_id, "runs after the crash test"
    since = time.time() - 1
    broker = build_broker(node.redis_server.url)
    try:
        enqueue_job(broker, CPU_QUEUE, job_id)  # what Dramatiq's redelivery would do
    finally:
        broker.close()
        broker.client.close()

    wait_for(lambda: duplicates_ignored(node, job_id) >= 1, timeout=30)
    assert created_containers(container_name(node.identity, job_id), since) == []
    assert node.record(job_id)["attempt"] == "2"
    assert node.backend.results(job_id) == [Killed.result]
    node.assert_unharmed()


def test_fork_bomb_is_stopped_by_the_pids_limit(node: Node) -> None:
    # Children exec a sleep with an argument unique to this run, so the host can count them.
    marker = f"31.{secrets.randbelow(10**8):08d}"
    script = f"""
import errno, json, os, time
children, failed = 0, None
while children < 5000:
    try:
        pid = os.fork()
    except OSError as exc:
        failed = errno.errorcode[exc.errno]
        break
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    children += 1
time.sleep(1)  # the children live on a moment, for the host to see them
print(json.dumps({{"children": children, "failed": failed}}))
"""
    job_id = node.submit(script=script, memoryLimit="1g", timeout=60)
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, len(host_processes_with(marker)))
        return bool(node.backend.results(job_id))

    wait_for(finished, timeout=60, interval=0.01)
    result = node.result(job_id)

    assert result["status"] == "completed", result["logs"]
    tried = report(result)
    assert tried["failed"] == "EAGAIN"  # fork refused by the pids cgroup, not by memory
    assert tried["children"] < PIDS_LIMIT
    assert PIDS_LIMIT // 2 < peak < PIDS_LIMIT  # what the host saw of them: many, never past the limit
    wait_for(lambda: host_processes_with(marker) == [], timeout=60)  # all gone with the container
    node.assert_unharmed()


def test_memory_bomb_is_oom_killed_and_reported(node: Node) -> None:
    script = "hog = []\nprint('allocating', flush=True)\nwhile True:\n    hog.append(b'x' * (16 << 20))\n"

    result = node.run(script=script, memoryLimit="128m", timeout=60)

    assert result["status"] == "failed"
    assert result["oomKilled"] is True
    assert result["exitCode"] == 137  # SIGKILL from the kernel's OOM killer
    assert "allocating" in result["logs"]
    node.assert_unharmed()


def test_rootfs_is_read_only_and_the_script_cannot_be_rewritten(node: Node) -> None:
    script = """
import errno, json
tried = {}
for path in ("/evil", "/usr/lib/evil", "/var/tmp/evil", "/job/script.py", "/job/new"):
    try:
        open(path, "a").close()
        tried[path] = "written"
    except OSError as exc:
        tried[path] = errno.errorcode[exc.errno]
print(json.dumps(tried))
"""
    result = node.run(script=script)

    assert result["status"] == "completed", result["logs"]
    assert report(result) == {
        "/evil": "EROFS",
        "/usr/lib/evil": "EROFS",
        "/var/tmp/evil": "EROFS",  # world-writable in the image: only the read-only rootfs stops it
        "/job/script.py": "EACCES",  # the script volume is root's: readable, not writable
        "/job/new": "EACCES",
    }
    node.assert_unharmed()


def test_scratch_space_fills_up_at_its_size(node: Node) -> None:
    script = """
import errno, json, os
filled = {}
for directory in ("/tmp", "/work", "/dev/shm"):
    written = 0
    try:
        with open(os.path.join(directory, "fill"), "wb") as handle:
            while True:
                handle.write(b"\\0" * (1 << 20))
                handle.flush()
                written += 1 << 20
    except OSError as exc:
        filled[directory] = [errno.errorcode[exc.errno], written >> 20]
    os.remove(os.path.join(directory, "fill"))
print(json.dumps(filled))
"""
    result = node.run(script=script, memoryLimit="256m")

    assert result["status"] == "completed", result["logs"]
    filled = report(result)
    for directory in ("/tmp", "/work", "/dev/shm"):
        reason, mib = filled[directory]
        assert reason == "ENOSPC"  # full at the tmpfs size, long before the 256 MiB memory limit
        assert 60 <= mib <= 64, filled
    assert result["oomKilled"] is False
    node.assert_unharmed()


def test_no_network_at_all(node: Node) -> None:
    redis_port = node.redis_server.port
    script = f"""
import errno, json, os, socket
tried = {{"interfaces": sorted(os.listdir("/sys/class/net"))}}
for name, address in (("redis", ("127.0.0.1", {redis_port})), ("internet", ("1.1.1.1", 53))):
    try:
        socket.create_connection(address, timeout=3).close()
        tried[name] = "connected"
    except OSError as exc:
        tried[name] = errno.errorcode.get(exc.errno, str(exc))
try:
    socket.getaddrinfo("example.com", 80)
    tried["dns"] = "resolved"
except socket.gaierror as exc:
    tried["dns"] = "failed"
print(json.dumps(tried))
"""
    result = node.run(script=script)

    assert result["status"] == "completed", result["logs"]
    assert report(result) == {
        "interfaces": ["lo"],
        "redis": "ECONNREFUSED",  # the job's loopback is its own: the host's Redis is not there
        "internet": "ENETUNREACH",
        "dns": "failed",
    }
    node.assert_unharmed()


def test_no_docker_socket_and_no_host_paths(node: Node) -> None:
    script = """
import json, os, socket
paths = ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock", "/var/lib/docker",
         "/etc/hypernode", "/proc/1/root/var/run/docker.sock"]
tried = {"present": [p for p in paths if os.path.exists(p)]}
try:
    client = socket.socket(socket.AF_UNIX)
    client.connect("/var/run/docker.sock")
    tried["connect"] = "connected"
except OSError as exc:
    tried["connect"] = type(exc).__name__
with open("/proc/1/cmdline", "rb") as handle:
    tried["pid1"] = os.path.basename(handle.read().split(b"\\0")[0].decode())
mounts = open("/proc/self/mounts").read()
tried["sockets_mounted"] = [line.split()[1] for line in mounts.splitlines() if ".sock" in line]
print(json.dumps(tried))
"""
    result = node.run(script=script)

    assert result["status"] == "completed", result["logs"]
    assert report(result) == {
        "present": [],
        "connect": "FileNotFoundError",
        "pid1": "docker-init",  # its own PID namespace: PID 1 is the init Docker put there
        "sockets_mounted": [],
    }
    node.assert_unharmed()


def test_privilege_escalation_fails(node: Node) -> None:
    script = """
import json, os, subprocess
def run(*argv):
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    return done.returncode
tried = {}
try:
    os.setuid(0)
    tried["setuid"] = "root"
except PermissionError:
    tried["setuid"] = "refused"
tried["su"] = run("su", "-c", "id -u", "root")
tried["mount"] = run("mount", "-t", "tmpfs", "none", "/tmp")
tried["unshare"] = run("unshare", "-r", "id")
tried["setuid_binary_uid"] = subprocess.run(["/usr/bin/passwd", "--help"], capture_output=True).returncode
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
tried["CapEff"] = status["CapEff"].strip()
tried["NoNewPrivs"] = status["NoNewPrivs"].strip()
tried["Seccomp"] = status["Seccomp"].strip()
tried["uid"] = os.getuid()
tried["euid"] = os.geteuid()
print(json.dumps(tried))
"""
    result = node.run(script=script)

    assert result["status"] == "completed", result["logs"]
    tried = report(result)
    assert tried["setuid"] == "refused"
    assert tried["su"] != 0 and tried["mount"] != 0 and tried["unshare"] != 0
    assert tried["CapEff"] == "0000000000000000"  # every capability dropped
    assert tried["NoNewPrivs"] == "1"  # setuid binaries gain nothing
    assert tried["Seccomp"] == "2"  # the default seccomp filter is on
    assert tried["uid"] == tried["euid"] == 65534
    node.assert_unharmed()


def test_job_runs_as_nobody_whatever_the_image_says(node: Node) -> None:
    result = node.run(command=["sh", "-c", "id -u; id -g; echo $HOME; touch $HOME/ok && echo home-writable"])

    assert result["status"] == "completed"
    assert result["logs"].split() == ["65534", "65534", "/work", "home-writable"]
    node.assert_unharmed()


def test_sleep_past_the_deadline_ignoring_sigterm_is_killed(node: Node) -> None:
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring TERM', flush=True)\ntime.sleep(27.1828 * 100)\n"
    )

    result = node.run(script=script, timeout=2)

    assert result["status"] == "timeout"
    assert result["exitCode"] == 137  # SIGTERM ignored: killed after the grace period
    assert "ignoring TERM" in result["logs"]
    assert result["durationMs"] >= 2000
    node.assert_unharmed()


def test_a_gigabyte_of_output_keeps_the_worker_small(node: Node) -> None:
    block = (b"y" * 1023 + b"\n") * 1024
    last = b"done after 1 GiB\n"
    script = f"""
import sys
block = (b"y" * 1023 + b"\\n") * 1024
write = sys.stdout.buffer.write
for _ in range(1024):
    write(block)
write({last!r})
"""
    job_id = node.submit(script=script, timeout=110)
    slot = node.slot_running(job_id)
    pid = node.worker_pid(slot)
    with RssSampler(pid) as rss:
        result = node.result(job_id, wait_s=110)

    assert result["status"] == "completed", result["logs"][-500:]
    assert result["logBytes"] == 1024 * len(block) + len(last)  # every byte reached the worker
    digest = hashlib.sha256()
    for _ in range(1024):
        digest.update(block)
    digest.update(last)
    assert result["fullLogsHash"] == digest.hexdigest()
    assert result["truncated"] is True
    assert len(result["logs"]) <= 10_000 and result["logs"].endswith("done after 1 GiB\n")
    assert "bytes of output cut here" in result["logs"]
    assert rss.samples > 0
    assert rss.peak < 150 * MIB, f"worker RSS peaked at {rss.peak >> 20} MiB"
    assert proc_status(pid, "VmHWM") < 150 * MIB  # the kernel's own high-water mark agrees
    node.assert_unharmed()


def test_binary_output_is_hashed_raw_and_sent_as_text(node: Node) -> None:
    noise = random.Random(7).randbytes(4 * MIB)
    script = "import os, random, sys\nos.write(1, random.Random(7).randbytes(4 << 20))\nprint('done')\n"

    result = node.run(script=script)

    assert result["status"] == "completed"
    assert result["logBytes"] == len(noise) + len(b"done\n")
    assert result["fullLogsHash"] == hashlib.sha256(noise + b"done\n").hexdigest()
    assert "\ufffd" in result["logs"] and result["logs"].endswith("done\n")
    verification = node.backend.verification(result["id"])
    assert verification is not None
    assert verification.checks["logsHashValid"] and verification.checks["executionHashValid"]
    assert verification.checks["signatureValid"]
    node.assert_unharmed()


def test_files_left_by_one_job_are_not_seen_by_the_next(node: Node) -> None:
    places = ["/tmp/left", "/work/left", "/dev/shm/left"]
    writer = f"for path in {places!r}:\n    open(path, 'w').write('secret')\nprint('written')\n"
    reader = (
        "import json, os\n"
        f"print(json.dumps({{'found': [p for p in {places!r} if os.path.exists(p)], "
        "'tmp': os.listdir('/tmp'), 'work': os.listdir('/work'), 'shm': os.listdir('/dev/shm')}))\n"
    )

    first = node.run(script=writer)
    second = node.run(script=reader)

    assert first["status"] == "completed" and "written" in first["logs"]
    assert second["status"] == "completed"
    assert report(second) == {"found": [], "tmp": [], "work": [], "shm": []}
    node.assert_unharmed()


def test_a_background_process_does_not_outlive_its_job(node: Node) -> None:
    marker = f"27.{secrets.randbelow(10**8):08d}"
    command = f"setsid sleep {marker} >/dev/null 2>&1 < /dev/null & echo started; sleep 1"

    result = node.run(command=command, timeout=60)

    assert result["status"] == "completed"
    assert "started" in result["logs"]
    wait_for(lambda: host_processes_with(marker) == [], timeout=60)  # gone with the container
    node.assert_unharmed()


def test_cancel_while_queued_never_starts_and_while_running_stops_with_the_logs_so_far(node: Node) -> None:
    since = time.time() - 1
    first = node.submit(script=LONG_SCRIPT, timeout=110)
    second = node.submit(script=LONG_SCRIPT, timeout=110)
    for job_id in (first, second):  # both slots busy
        node.slot_running(job_id)
    queued = node.submit(script="print('must never run')")
    wait_for(lambda: node.record(queued).get("state") == "queued", timeout=60)

    node.backend.cancel(queued)
    wait_for(lambda: node.redis.exists(keys.CANCEL.format(job_id=queued)), timeout=60)
    node.backend.cancel(first)
    stopped = node.result(first, wait_s=30)
    never = node.result(queued, wait_s=30)  # the freed slot takes it and finds it cancelled
    node.backend.cancel(second)
    node.result(second, wait_s=30)

    assert stopped["status"] == "cancelled" and stopped["success"] is False
    assert "working" in stopped["logs"]  # the logs up to the cancel
    assert stopped["exitCode"] == 143  # SIGTERM within the grace period
    assert never["status"] == "cancelled"
    assert never["logBytes"] == 0 and never["image"] == "" and never["exitCode"] == -1
    assert created_containers(container_name(node.identity, queued), since) == []  # it never started
    node.assert_unharmed()


def test_the_killed_workers_message_comes_back_and_changes_nothing(node: Node) -> None:
    job_id = Killed.job_id
    assert job_id, "runs after the crash test"
    left = REDELIVERY_WAIT_S - (time.monotonic() - Killed.at)

    wait_for(lambda: duplicates_ignored(node, job_id) >= 2, timeout=max(left, 1), interval=0.5)
    assert node.backend.results(job_id) == [Killed.result]
    assert node.record(job_id)["attempt"] == "2"
    node.assert_unharmed()
