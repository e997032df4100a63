"""`hypernode-host demo`: the main job on embedded defaults, end to end, with real parts.

A reference backend on a free port, a private Redis (unless HN_REDIS_URL is set), the node
(`up`: bridge and workers) as a child process, real containers; four example jobs submitted
through the backend; a table of what happened. Everything it started is stopped at the end.

``--upstream``: the backend behaves as upstream's published one (single-use tokens, replies without
ids, a demo job after each register, every result frame credited). After the four jobs the demo cuts
the node's connection: its next register is refused ("Token already used"), the node keeps running,
and a new token written to its HN_NODE_TOKEN_FILE gets it registered again. Every job, upstream's
demo jobs included, must be credited exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernode_host.backend.harness import BackendThread
from hypernode_host.backend.records import JobPhase
from hypernode_host.backend.submit import submit_job
from hypernode_host.errors import ContainerError, HypernodeError
from hypernode_host.logs import redact
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.tasks.containers import LABEL_NODE, DockerRuntime

LOCAL_IMAGE = "hypernode/job-python:3.11"
STEP_TIMEOUT_S = 120.0  # each wait of the upstream demo: generous, the machine may be busy

PROGRESS = """\
import time
for step in range(1, 5):
    print(f"step {step}/4: working", flush=True)
    time.sleep(0.5)
print("✅ Job completed successfully!")
"""

COMPUTE = """\
# Numeric work: primes below 200000 by a sieve, and pi by the Leibniz series.
limit = 200_000
sieve = bytearray([1]) * limit
sieve[0:2] = b"\\x00\\x00"
for i in range(2, int(limit ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
pi = 4 * sum((-1) ** k / (2 * k + 1) for k in range(1_000_000))
print(f"primes below {limit}: {sum(sieve)}")
print(f"pi ~ {pi:.6f}")
print("computation finished")
"""

EXIT_3 = """\
import sys
print("checking input... input is invalid", flush=True)
sys.exit(3)
"""

OVERRUN = """\
import time
print("sleeping far past the time limit", flush=True)
time.sleep(600)
"""


@dataclass(frozen=True)
class Example:
    name: str
    script: str
    expected: str  # the status the result must have
    verified: bool  # what the Oracle must say
    timeout: float
    estimated_time: float
    exit_code: int | None = None


EXAMPLES = (
    Example("progress", PROGRESS, "completed", True, 60, 10, 0),
    Example("compute", COMPUTE, "completed", True, 60, 30, 0),
    Example("exit-3", EXIT_3, "failed", False, 60, 10, 3),
    Example("overrun", OVERRUN, "timeout", False, 3, 10),
)


def _default_image() -> str:
    """The local job image when it exists (no registry here), else the production default."""
    if os.environ.get("HN_JOB_IMAGE"):
        return os.environ["HN_JOB_IMAGE"]
    try:
        return LOCAL_IMAGE if DockerRuntime().has_image(LOCAL_IMAGE) else "python:3.11-slim"
    except ContainerError:
        return "python:3.11-slim"


@contextmanager
def _node(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypernode_host", "up"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _submit_all(url: str, run_id: str) -> list[dict[str, Any]]:
    async def one(example: Example) -> dict[str, Any]:
        job = {
            "id": f"demo-{run_id}-{example.name}",
            "script": example.script,
            "timeout": example.timeout,
            "estimatedTime": example.estimated_time,
            "memoryLimit": "256m",
            "cpuLimit": 1.0,
        }
        try:
            return await submit_job(url, job, wait=True, wait_timeout=120)
        except TimeoutError:
            return {"id": job["id"], "result": None, "verification": None}

    return list(await asyncio.gather(*(one(e) for e in EXAMPLES)))


def _row(example: Example, outcome: dict[str, Any], credits: int) -> dict[str, Any]:
    result = outcome.get("result") or {}
    verification = outcome.get("verification") or {}
    row = {
        "id": outcome["id"],
        "expected": example.expected,
        "status": result.get("status", "no result"),
        "exitCode": result.get("exitCode"),
        "verified": bool(verification.get("verified")),
        "durationMs": result.get("durationMs"),
        "credits": credits,
    }
    row["ok"] = (
        row["status"] == example.expected
        and row["verified"] == example.verified
        and (example.exit_code is None or row["exitCode"] == example.exit_code)
        and credits == 1
    )
    return row


def _demo_job_rows(backend: BackendThread, submitted: set[str]) -> list[dict[str, Any]]:
    """Upstream's demo jobs (``sleep 5``, pushed after each register): completed and credited once."""
    rows = []
    for job in backend.jobs():
        if job["id"] in submitted:
            continue
        results = backend.results(job["id"])
        result = results[0] if results else {}
        row = {
            "id": job["id"],
            "expected": "completed",
            "status": result.get("status", "no result"),
            "exitCode": result.get("exitCode"),
            "verified": bool(job["verified"]),
            "durationMs": result.get("durationMs"),
            "credits": job["credits"],
        }
        row["ok"] = row["status"] == "completed" and job["credits"] == 1
        rows.append(row)
    return rows


class TokenFile:
    """The node's HN_NODE_TOKEN_FILE: each new token is added to the backend, then written atomically."""

    def __init__(self, path: Path, backend: BackendThread) -> None:
        self.path = path
        self.backend = backend

    def give(self) -> str:
        token = f"demo-{secrets.token_hex(8)}"
        self.backend.add_token(token)
        spare = self.path.with_suffix(".new")
        spare.write_text(token + "\n")
        spare.chmod(0o600)
        os.replace(spare, self.path)  # never a half-written token: the bridge reads it at any moment
        return token


def _connected(backend: BackendThread) -> list[str]:
    return [str(node["nodeId"]) for node in backend.nodes() if node["connected"]]


def _demo_jobs_answered(backend: BackendThread, submitted: set[str], count: int) -> bool:
    answered = [j for j in backend.jobs() if j["id"] not in submitted and j["state"] == JobPhase.FINISHED]
    return len(answered) >= count


def _step(backend: BackendThread, what: str, done: Callable[[], bool]) -> None:
    try:
        backend.wait_until(done, STEP_TIMEOUT_S)
    except TimeoutError:
        raise HypernodeError(f"the upstream demo got stuck: {what} did not happen in {STEP_TIMEOUT_S:.0f} s") from None


def _token_rotation(backend: BackendThread, tokens: TokenFile, submitted: set[str], say: Callable[[str], None]) -> None:
    """Upstream's demo job answered; a cut; the spent token refused; a new token; registered again."""
    say("waiting for upstream's demo job (sleep 5, sent 5 s after the register)")
    _step(backend, "the first demo job's result", lambda: _demo_jobs_answered(backend, submitted, 1))
    [first] = _connected(backend)
    say("cutting the connection: upstream spent the token on the first register")
    backend.disconnect()
    _step(backend, "a refused register", lambda: backend.registers_refused() >= 1)
    say("the node's register was refused (Token already used); it keeps running, and gets a new token")
    tokens.give()
    _step(backend, "a register with the new token", lambda: _connected(backend) not in ([], [first]))
    say(f"registered again as node {_connected(backend)[0]}; waiting for its demo job")
    _step(backend, "the second demo job's result", lambda: _demo_jobs_answered(backend, submitted, 2))


def _leftover_containers(node_name: str) -> int:
    return len(DockerRuntime().labelled(LABEL_NODE, node_name))


def run_demo(as_json: bool = False, upstream: bool = False) -> bool:
    """Run the demo; True when every job ended as expected, was credited once, and nothing was left behind."""
    run_id = secrets.token_hex(3)
    node_name = f"demo-{run_id}"

    def say(text: str) -> None:
        if not as_json:
            print(text, flush=True)

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-demo-")))
        backend = stack.enter_context(BackendThread("127.0.0.1", 0, upstream=upstream))
        tokens = TokenFile(workdir / "node.token", backend)
        tokens.give()
        say(f"reference backend on {backend.url}" + (", behaving as upstream's published one" if upstream else ""))
        redis_url = os.environ.get("HN_REDIS_URL") or stack.enter_context(RedisProcess()).url
        say(f"redis at {redact(redis_url)}")  # its password stays off the terminal
        image = _default_image()
        env = {
            **{k: v for k, v in os.environ.items() if k != "HN_NODE_TOKEN"},
            "HN_NODE_TOKEN_FILE": str(tokens.path),  # the token is never in an argument or a variable
            "HN_ENDPOINT": backend.url,
            "HN_REDIS_URL": redis_url,
            "HN_JOB_IMAGE": image,
            "HN_KEY_FILE": str(workdir / "node.key"),
            "HN_STATE_DIR": str(workdir / "state"),  # the demo's ledger, not the operator's
            "HN_NODE_NAME": node_name,
            "HN_CPU_SLOTS": os.environ.get("HN_CPU_SLOTS", "2"),
            "HN_RECONNECT_DELAY": "0.5",
        }
        log_path = workdir / "node.log"
        say(f"starting the node (image {image}, {env['HN_CPU_SLOTS']} CPU slots)")
        started = time.monotonic()
        with _node(env, log_path) as node:
            outcomes = asyncio.run(_submit_all(backend.url, run_id))
            submitted = {str(o["id"]) for o in outcomes}
            if upstream:
                _token_rotation(backend, tokens, submitted, say)
            if node.poll() is not None:
                raise HypernodeError(f"the node exited early:\n{log_path.read_text()[-2000:]}")
            rows = [_row(e, o, backend.credits(o["id"])) for e, o in zip(EXAMPLES, outcomes, strict=True)]
            rows += _demo_job_rows(backend, submitted)
        leftovers = _leftover_containers(node_name)
        ok = all(r["ok"] for r in rows) and leftovers == 0
        if as_json:
            print(json.dumps({"ok": ok, "jobs": rows, "leftoverContainers": leftovers}))
        else:
            _print_table(rows, time.monotonic() - started, leftovers, ok)
            if not ok:
                print(log_path.read_text()[-4000:], file=sys.stderr)
        return ok


def _print_table(rows: list[dict[str, Any]], elapsed: float, leftovers: int, ok: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("job", "expected", "status", "exit code", "duration", "verified", "credited", "as expected")
    for r in rows:
        duration = f"{r['durationMs'] / 1000:.2f} s" if r["durationMs"] is not None else "-"
        table.add_row(
            r["id"],
            r["expected"],
            r["status"],
            str(r["exitCode"]),
            duration,
            "yes" if r["verified"] else "no",
            f"{r['credits']}x",
            "✅" if r["ok"] else "❌",
        )
    console = Console()
    console.print(table)
    console.print(f"{len(rows)} jobs in {elapsed:.1f} s; job containers left behind: {leftovers}")
    console.print("demo OK" if ok else "demo FAILED")
