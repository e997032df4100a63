"""Chaos run: short jobs over two slots on the real stack while random faults hit it; every job must end
with exactly one result and nothing may be left behind.

The parts are real and each can be broken: `hypernode-host up` (bridge and two CPU workers), a private
Redis with AOF, the reference backend behind a fault proxy, and, with ``--engine``, a Docker engine of
the run's own (tests/execution/privatedocker.py) that the run restarts. Faults, drawn at random every
few seconds: SIGKILL a worker, SIGKILL the bridge, restart Redis (its AOF brings the state back), kill
every Redis client connection, cut the WebSocket, restart the reference backend (its state kept, as a
backend's database would), restart the Docker engine. Prints a table: jobs, faults of each kind,
results per job, leftover containers, and the RSS and open file descriptors of the long-lived
processes at the start and at the end. Exit status 1 when an invariant does not hold.

    .venv/bin/python bench/chaos.py [--jobs 300] [--engine] [--seed N]

tests/integration/test_chaos.py runs a bounded version in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis

TESTS = Path(__file__).resolve().parent.parent / "tests"
for _part in (TESTS, TESTS / "bridge", TESTS / "execution"):  # the real parts the tests use, reused here
    if str(_part) not in sys.path:
        sys.path.insert(0, str(_part))

from faultproxy import Proxy  # noqa: E402
from privatedocker import PrivateDockerd  # noqa: E402

from hypernode_host.backend.harness import BackendThread  # noqa: E402
from hypernode_host.node.redis_server import RedisProcess, free_port  # noqa: E402
from hypernode_host.state import keys  # noqa: E402
from hypernode_host.tasks.containers import LABEL_JOB, LABEL_NODE, DockerRuntime  # noqa: E402
from support import NodeProcess, node_env, wait_for  # noqa: E402

KINDS = (
    "kill_worker", "kill_bridge", "restart_redis", "kill_redis_clients", "cut_websocket", "restart_backend",
    "restart_engine",
)  # fmt: skip
RESULT_WAIT_S = 600


@dataclass
class Report:
    jobs: int
    faults: Counter[str]
    results_per_job: Counter[int]  # number of distinct results -> jobs with that many
    statuses: Counter[str]
    credited_once: int
    leftover_containers: int
    processes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (start, end) "RSS KiB / fds"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _proc_usage(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return "gone"
    return f"{rss} KiB / {fds} fds (pid {pid})"


class Chaos:
    """The stack and the faults it can suffer."""

    def __init__(self, stack: ExitStack, engine: bool, workdir: Path) -> None:
        token = f"chaos-{secrets.token_hex(6)}"
        (workdir / "redis").mkdir()
        self.redis = RedisProcess(port=free_port(), appendonly=True, directory=workdir / "redis")
        self.redis.start()
        stack.callback(self.redis.stop)
        self.backend = stack.enter_context(BackendThread("127.0.0.1", free_port(), [token]))
        self.backend_lock = threading.Lock()  # no job is submitted to the backend while it restarts
        self.proxy = stack.enter_context(Proxy(self.backend.port))
        self.dockerd: PrivateDockerd | None = None
        extra = {"HN_CPU_SLOTS": "2", "HN_LOG_LEVEL": "INFO", "HN_HEARTBEAT_INTERVAL": "2"}
        if engine:
            self.dockerd = PrivateDockerd()
            stack.callback(self.dockerd.close)
            self.dockerd.start()
            self.dockerd.load_image()
            extra["DOCKER_HOST"] = self.dockerd.url
        self.env = node_env(self.redis.url, self.proxy.url, token, workdir, **extra)
        self.node = stack.enter_context(NodeProcess(self.env))
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        stack.callback(self.client.close)
        self.wait_workers()

    @property
    def host(self) -> str:
        return self.env["HN_NODE_NAME"]

    def kinds(self) -> tuple[str, ...]:
        return KINDS if self.dockerd is not None else KINDS[:-1]

    def wait_workers(self, timeout: float = 120) -> None:
        def both() -> bool:
            try:
                return all(self.client.exists(keys.WORKER.format(host=self.host, slot=s)) for s in (0, 1))
            except redis.RedisError:
                return False

        wait_for(both, timeout=timeout, interval=0.2)

    def pids(self) -> dict[str, int]:
        assert self.node.proc is not None
        found = {"up": self.node.proc.pid}
        if self.redis.proc is not None:
            found["redis"] = self.redis.proc.pid
        for child in Path(f"/proc/{self.node.proc.pid}/task").iterdir():
            for pid in (child / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if " bridge" in cmdline:
                    found["bridge"] = int(pid)
                elif "--slot" in cmdline:
                    found[f"worker {cmdline.split('--slot')[-1].split()[0]}"] = int(pid)
        return found

    def usage(self) -> dict[str, str]:
        return {name: _proc_usage(pid) for name, pid in sorted(self.pids().items())}

    # faults ------------------------------------------------------------------------------------

    def inflict(self, kind: str, rng: random.Random) -> None:
        getattr(self, kind)(rng)

    def kill_worker(self, rng: random.Random) -> None:
        workers = [pid for name, pid in self.pids().items() if name.startswith("worker")]
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)

    def kill_bridge(self, rng: random.Random) -> None:
        pid = self.pids().get("bridge")
        if pid:
            os.kill(pid, signal.SIGKILL)

    def restart_redis(self, rng: random.Random) -> None:
        self.redis.stop()
        time.sleep(rng.uniform(0, 1))  # down a while, as a restart is
        self.redis.start()

    def kill_redis_clients(self, rng: random.Random) -> None:
        self.client.client_kill_filter(_type="normal", skipme=True)

    def cut_websocket(self, rng: random.Random) -> None:
        self.proxy.drop()

    def restart_backend(self, rng: random.Random) -> None:
        with self.backend_lock:  # the submitter waits for it, as a backend's own submitters would
            self.backend.stop()
            time.sleep(rng.uniform(0, 1))
            self.backend.start()

    def restart_engine(self, rng: random.Random) -> None:
        assert self.dockerd is not None
        self.dockerd.stop()
        self.dockerd.start()

    # the end -----------------------------------------------------------------------------------

    def containers(self) -> list[str]:
        runtime = DockerRuntime()
        if self.dockerd is not None:
            import docker

            runtime = DockerRuntime(docker.DockerClient(base_url=self.dockerd.url))
        return [cid for cid, labels in runtime.labelled(LABEL_NODE, self.host) if LABEL_JOB in labels]


def job(i: int, rng: random.Random) -> dict[str, object]:
    pause = round(rng.uniform(0.1, 1.5), 2)
    script = f"import time\nprint('job {i} start', flush=True)\ntime.sleep({pause})\nprint('job {i} done')\n"
    return {"id": f"chaos-{i:04d}-{secrets.token_hex(3)}", "script": script, "memoryLimit": "128m", "cpuLimit": 0.5}


def run(
    jobs: int,
    *,
    seed: int | None = None,
    engine: bool = False,
    every_s: tuple[float, float] = (2.0, 6.0),
    kinds: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """``jobs`` jobs, submitted a few a second, with a fault every ``every_s`` (drawn among ``kinds``,
    every kind at least once when the run lasts long enough), then the checks."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible draw of faults, not a secret
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-chaos-", dir="/tmp")))
        chaos = Chaos(stack, engine, workdir)
        chosen = list(kinds or chaos.kinds())
        start_usage = chaos.usage()
        sent = [job(i, rng) for i in range(jobs)]
        submitted = threading.Event()

        def submit() -> None:
            for item in sent:
                with chaos.backend_lock:
                    chaos.backend.send_job(item)
                time.sleep(rng.uniform(0.05, 0.4))
            submitted.set()

        feeder = threading.Thread(target=submit, name="chaos-submit", daemon=True)
        feeder.start()
        faults: Counter[str] = Counter()
        pending = rng.sample(chosen, len(chosen))  # each kind once first, then at random
        while not submitted.is_set() and feeder.is_alive():
            time.sleep(rng.uniform(*every_s))
            kind = pending.pop() if pending else rng.choice(chosen)
            progress(f"fault: {kind}")
            chaos.inflict(kind, rng)
            faults[kind] += 1
        feeder.join()
        if not submitted.is_set():
            raise RuntimeError("the chaos run's submitter died before it sent every job (its traceback is above)")
        while pending:  # a short run still tries every kind
            kind = pending.pop()
            progress(f"fault: {kind}")
            chaos.inflict(kind, rng)
            faults[kind] += 1
            time.sleep(every_s[0])
        report = _check(chaos, sent, faults, progress)
        report.processes = {name: (start_usage.get(name, "-"), end) for name, end in chaos.usage().items()}
        for name, begun in start_usage.items():
            report.processes.setdefault(name, (begun, "-"))
        return report


def _check(
    chaos: Chaos, sent: list[dict[str, object]], faults: Counter[str], progress: Callable[[str], None]
) -> Report:
    progress("waiting for every result")
    ids = [str(item["id"]) for item in sent]
    deadline = time.monotonic() + RESULT_WAIT_S
    while time.monotonic() < deadline and not all(chaos.backend.results(i) for i in ids):
        time.sleep(0.5)
    problems = []
    per_job: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    credited_once = 0
    for job_id in ids:
        copies = chaos.backend.results(job_id)
        distinct = {json.dumps(copy, sort_keys=True) for copy in copies}
        per_job[len(distinct)] += 1
        if len(distinct) != 1:
            problems.append(f"job {job_id}: {len(distinct)} distinct results")
        if copies:
            reason = copies[0].get("reason")
            statuses[f"{copies[0]['status']}/{reason}" if reason else str(copies[0]["status"])] += 1
        credits = chaos.backend.credits(job_id)
        credited_once += credits == 1
        if credits != 1:
            problems.append(f"job {job_id}: credited {credits} times")
    try:
        wait_for(lambda: chaos.client.xlen(keys.REPLY_STREAM) == 0, timeout=120, interval=0.5)
    except AssertionError:
        problems.append(f"outbox not empty: {chaos.client.xlen(keys.REPLY_STREAM)}")
    try:
        leftovers = wait_for(lambda: chaos.containers() == [] or None, timeout=120, interval=1) and []
    except AssertionError:
        leftovers = chaos.containers()
        problems.append(f"{len(leftovers)} containers left")
    return Report(len(ids), faults, per_job, statuses, credited_once, len(leftovers), problems=problems)


def table(report: Report) -> str:
    rows = [("jobs", report.jobs)]
    rows += [(f"fault {kind}", report.faults.get(kind, 0)) for kind in KINDS]
    rows += [(f"jobs with {n} result(s)", count) for n, count in sorted(report.results_per_job.items())]
    rows += [(f"status {status}", count) for status, count in sorted(report.statuses.items())]
    rows += [("credited exactly once", report.credited_once), ("leftover containers", report.leftover_containers)]
    lines = [f"{name:<34} {value}" for name, value in rows]
    lines.append(f"{'process':<10} {'at the start':<40} at the end")
    lines += [f"{name:<10} {start:<40} {end}" for name, (start, end) in sorted(report.processes.items())]
    lines += [f"PROBLEM: {problem}" for problem in report.problems[:20]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--engine", action="store_true", help="restart a Docker engine of the run's own too")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 30)
    print(f"chaos: {args.jobs} jobs, seed {seed}{', own Docker engine' if args.engine else ''}", flush=True)
    report = run(args.jobs, seed=seed, engine=args.engine, progress=lambda line: print(line, flush=True))
    print(table(report))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
