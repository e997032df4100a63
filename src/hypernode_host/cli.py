"""The `hypernode-host` command line: thin over library functions.

Every setting is an ``HN_*`` environment variable and also a global option
(``hypernode-host --redis-url redis://... up``); both go through one validator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from hypernode_host.errors import AuthError, ConfigError, HypernodeError
from hypernode_host.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3

app = typer.Typer(
    name="hypernode-host",
    help="Node agent for the Hypernode GPU compute network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Global option → environment variable: the CLI writes options into the environment, so the
# children `up` starts see exactly the same settings.
_OPTION_ENV = {
    "token": "HN_NODE_TOKEN",
    "endpoint": "HN_ENDPOINT",
    "heartbeat_interval": "HN_HEARTBEAT_INTERVAL",
    "job_timeout": "HN_JOB_TIMEOUT",
    "max_log_size": "HN_MAX_LOG_SIZE",
    "reconnect_delay": "HN_RECONNECT_DELAY",
    "redis_url": "HN_REDIS_URL",
    "job_image": "HN_JOB_IMAGE",
    "gpu_job_image": "HN_GPU_JOB_IMAGE",
    "allowed_images": "HN_ALLOWED_IMAGES",
    "simulate_gpus": "HN_SIMULATE_GPUS",
    "cpu_slots": "HN_CPU_SLOTS",
    "key_file": "HN_KEY_FILE",
    "node_name": "HN_NODE_NAME",
    "log_level": "HN_LOG_LEVEL",
}


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    """Our errors as one line and an exit code: 2 bad settings, 3 refused by the backend, 1 other."""
    try:
        yield
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except AuthError as exc:
        raise fail(str(exc), EXIT_AUTH) from None
    except HypernodeError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def load_settings() -> Settings:
    """Settings from the environment (options already written into it); one line and exit 2 if bad."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    from hypernode_host import logs

    secret = settings.node_token.get_secret_value() if settings.node_token else ""
    logs.configure(settings.log_level, [secret])
    return settings


@app.callback()
def main_options(
    token: Annotated[str | None, typer.Option(help="Node token [HN_NODE_TOKEN].", show_default=False)] = None,
    endpoint: Annotated[str | None, typer.Option(help="Backend WebSocket URL [HN_ENDPOINT].")] = None,
    heartbeat_interval: Annotated[
        str | None, typer.Option(help="Seconds between heartbeats [HN_HEARTBEAT_INTERVAL].")
    ] = None,
    job_timeout: Annotated[str | None, typer.Option(help="Longest a job may run, s [HN_JOB_TIMEOUT].")] = None,
    max_log_size: Annotated[str | None, typer.Option(help="Characters of logs sent per job [HN_MAX_LOG_SIZE].")] = None,
    reconnect_delay: Annotated[str | None, typer.Option(help="First reconnect delay, s [HN_RECONNECT_DELAY].")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL [HN_REDIS_URL].")] = None,
    job_image: Annotated[str | None, typer.Option(help="Default job image [HN_JOB_IMAGE].")] = None,
    gpu_job_image: Annotated[str | None, typer.Option(help="Default GPU job image [HN_GPU_JOB_IMAGE].")] = None,
    allowed_images: Annotated[
        str | None, typer.Option(help="Extra allowed image patterns, comma-separated [HN_ALLOWED_IMAGES].")
    ] = None,
    simulate_gpus: Annotated[
        str | None, typer.Option(help="Simulated GPUs: 4 or 2xRTX4090:24576 [HN_SIMULATE_GPUS].")
    ] = None,
    cpu_slots: Annotated[str | None, typer.Option(help="CPU worker slots [HN_CPU_SLOTS].")] = None,
    key_file: Annotated[str | None, typer.Option(help="Node Ed25519 key file [HN_KEY_FILE].")] = None,
    node_name: Annotated[str | None, typer.Option(help="Node name in labels and hostInfo [HN_NODE_NAME].")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR [HN_LOG_LEVEL].")] = None,
) -> None:
    for name, value in locals().items():
        if value is not None:
            os.environ[_OPTION_ENV[name]] = value


@app.command()
def up() -> None:
    """Run the whole node: the bridge and one worker per slot, supervised."""
    from hypernode_host.supervisor import run_up

    settings = load_settings()
    with exit_codes():
        code = run_up(settings)
    raise typer.Exit(code)


@app.command()
def bridge() -> None:
    """Run the bridge alone: the backend WebSocket, job intake and result delivery."""
    from hypernode_host.bridge.client import run_bridge

    settings = load_settings()
    with exit_codes():
        run_bridge(settings)


@app.command()
def worker(slot: Annotated[int, typer.Option(help="Slot number (see `hypernode-host gpus`).")] = 0) -> None:
    """Run one worker: the jobs of one slot, one at a time."""
    from hypernode_host.tasks.worker import run_worker

    settings = load_settings()
    with exit_codes():
        run_worker(settings, slot)


@app.command("dev-backend")
def dev_backend(
    token: Annotated[list[str], typer.Option("--token", help="A node token it accepts (repeatable).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3003,
) -> None:
    """Run the reference backend: the upstream protocol, job submission and the Oracle."""
    from hypernode_host import logs
    from hypernode_host.backend.server import run_backend

    logs.configure(os.environ.get("HN_LOG_LEVEL", "INFO").upper(), list(token))
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line of our own is enough
    run_backend(host, port, list(token))


@app.command()
def submit(
    backend: Annotated[str, typer.Option(help="Reference backend URL, ws://HOST:PORT.")],
    script: Annotated[Path | None, typer.Option(help="Python script to run.", exists=True, dir_okay=False)] = None,
    command: Annotated[str | None, typer.Option(help="Shell command to run instead of a script.")] = None,
    image: Annotated[str | None, typer.Option(help="Image (must be allowed on the node).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Job time limit, s.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 512m.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU limit, e.g. 1.0.")] = None,
    gpu: Annotated[bool, typer.Option(help="The job needs a GPU.")] = False,
    estimated_time: Annotated[float | None, typer.Option(help="Expected duration, s (the Oracle allows 2x).")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Job id (default: a new UUID).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result.")] = False,
    wait_timeout: Annotated[float, typer.Option(help="How long to wait, s.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Submit a job to a reference backend and (with --wait) print its result and verification."""
    from hypernode_host.backend.submit import build_job, submit_job

    if (script is None) == (command is None):
        raise fail("give exactly one of --script FILE or --command STR")
    job = build_job(
        script=script.read_text() if script else None,
        command=command,
        image=image,
        timeout=timeout,
        memory=memory,
        cpus=cpus,
        gpu=gpu,
        estimated_time=estimated_time,
        job_id=job_id,
    )
    try:
        outcome = asyncio.run(submit_job(backend, job, wait=wait, wait_timeout=wait_timeout))
    except TimeoutError:
        typer.echo(
            json.dumps({"id": job.get("id"), "result": None, "verification": None})
            if as_json
            else f"no result within {wait_timeout:g} s",
            err=not as_json,
        )
        raise typer.Exit(EXIT_USAGE) from None
    except (OSError, HypernodeError) as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    _print_outcome(outcome, as_json)


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(outcome))
        return
    result, verification = outcome.get("result"), outcome.get("verification")
    typer.echo(f"job {outcome['id']}")
    if result:
        typer.echo(f"status {result['status']}, exit code {result['exitCode']}, {result.get('durationMs', 0)} ms")
        typer.echo(result.get("logs", ""))
    if verification:
        failed = [name for name, ok in verification["checks"].items() if not ok]
        typer.echo("verified" if verification["verified"] else f"NOT verified: {', '.join(failed)}")


@app.command()
def demo(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Run four example jobs end to end on embedded defaults and say what happened."""
    from hypernode_host.demo import run_demo

    with exit_codes():
        ok = run_demo(as_json=as_json)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
def gpus(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The GPUs this node sees and the worker slots it would run."""
    from rich.console import Console
    from rich.table import Table

    from hypernode_host.gpu import discover, plan_slots

    settings = load_settings()
    found = discover(settings)
    slots = plan_slots(found, settings.cpu_slots)
    if as_json:
        payload = {
            "gpus": [g.entry().model_dump() | {"simulated": g.simulated} for g in found],
            "slots": [{"slot": s.id, "queue": s.queue, "gpus": list(s.gpu_uuids)} for s in slots],
        }
        typer.echo(json.dumps(payload))
        return
    table = Table("index", "name", "uuid", "memory MiB", "util %")
    for g in found:
        table.add_row(
            str(g.index),
            g.name + (" (simulated)" if g.simulated else ""),
            g.uuid,
            str(g.memory_total_mb),
            str(g.utilization_pct),
        )
    console = Console()
    console.print(table if found else "no GPUs: this node runs CPU jobs only")
    for s in slots:
        console.print(f"{s.describe()} → queue {s.queue}")


def main() -> None:
    logging.captureWarnings(True)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
