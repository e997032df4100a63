"""The `hypernode-host` command line: thin over library functions.

Every setting is an ``HN_*`` environment variable and also a global option derived from its
Settings field (``hypernode-host --redis-url redis://... up``); both go through one validator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args

import typer

from hypernode_host.core.jobs import JobState, Status
from hypernode_host.escapes import shown, shown_text
from hypernode_host.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe_exit
from hypernode_host.settings import Flag, Settings

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo
    from rich.console import Console, RenderableType

    from hypernode_host.core.slots import Slot
    from hypernode_host.state import Store
    from hypernode_host.tasks.dramatiq_redis import Queues

app = typer.Typer(
    name="hypernode-host",
    help="Node agent for the Hypernode GPU compute network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {shown(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    """Our errors (and Redis's) as one line and their exit code (exitcodes.describe_exit); a bug raises."""
    try:
        yield
    except Exception as exc:
        described = describe_exit(exc)
        if described is None:
            raise
        code, message = described
        raise fail(message, code) from None


def _print_version(value: bool) -> None:
    if value:
        from hypernode_host import AGENT_VERSION

        typer.echo(f"hypernode-host {AGENT_VERSION}")
        raise typer.Exit(EXIT_OK)


def load_settings() -> Settings:
    """Settings from the environment (options already written into it); one line and exit 2 if bad."""
    with exit_codes():
        settings = Settings.from_env()
    from hypernode_host import logs

    secret = settings.node_token.get_secret_value() if settings.node_token else ""
    logs.configure(settings.log_level, [secret], settings.log_format)
    return settings


def _setting_options(callback: Callable[..., None]) -> Callable[..., None]:
    """Give ``callback`` (which takes ``**settings``) one option per setting: typer reads a command's
    options from its signature, so the signature gets a keyword parameter per Settings field."""
    signature = inspect.signature(callback, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_setting_option(name, field))
        for name, field in Settings.model_fields.items()
        if field.alias
    ]
    cast(Any, callback).__signature__ = signature.replace(parameters=[*options, *own])
    return callback


def _setting_option(name: str, field: FieldInfo) -> Any:
    """``--field-name`` (or the field's Flag) with the field's type and description, read from its variable.

    Help shows the field's type, but parser=str hands the text on as given: options and variables
    meet one validator (Settings.from_env), so a bad value reads the same from either.
    """
    flag = next((m.name for m in field.metadata if isinstance(m, Flag)), "--" + name.replace("_", "-"))
    union = get_args(field.annotation)
    declared = next(k for k in union if k is not type(None)) if type(None) in union else field.annotation
    shown = declared if declared in (int, float, Path) else str  # URLs, secrets, lists of patterns: text
    option = typer.Option(flag, envvar=field.alias, help=field.description, parser=str, show_default=False)
    return Annotated[shown | None, option]


@app.callback()
@_setting_options
def main_options(
    *,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the agent version and exit.", is_eager=True, callback=_print_version),
    ] = False,
    **settings: str | None,
) -> None:
    # Into the environment, where Settings.from_env reads them, and so do the children `up` starts.
    for name, value in settings.items():
        if value is not None:
            os.environ[str(Settings.model_fields[name].alias)] = value


@app.command()
def up() -> None:
    """Run the whole node: the bridge and one worker per slot, supervised."""
    from hypernode_host.node.supervisor import run_up

    settings = load_settings()
    with exit_codes():
        code = run_up(settings)
    raise typer.Exit(code)


@app.command()
def bridge() -> None:
    """Run the bridge alone: the backend WebSocket, job intake and result delivery."""
    from hypernode_host.node.child import bridge_process

    settings = load_settings()
    with exit_codes():
        bridge_process(settings)


@app.command()
def worker(slot: Annotated[int, typer.Option(help="Slot number (see `hypernode-host gpus`).")] = 0) -> None:
    """Run one worker: the jobs of one slot, one at a time."""
    from hypernode_host.node.child import worker_process

    settings = load_settings()
    with exit_codes():
        worker_process(settings, slot)


@app.command()
def notify(
    test: Annotated[
        bool, typer.Option("--test", help="Send one test event to each URL now, say what each answered.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Deliver the node's events to HN_NOTIFY_URL (`up` runs this when a URL is set); --test checks the URLs."""
    settings = load_settings()
    if not settings.notify_url:
        raise fail("HN_NOTIFY_URL is not set (--notify-url): no receiver to notify")
    if test:
        from hypernode_host.ops.notify import send_test

        outcomes = send_test(settings)
        if as_json:
            _echo_json({"receivers": outcomes})
        else:
            for outcome in outcomes:
                typer.echo(f"{'ok' if outcome.ok else 'FAILED'} {outcome.receiver}: {outcome.detail}")
        raise typer.Exit(EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED)
    from hypernode_host.node.child import notify_process

    with exit_codes():
        notify_process(settings)


@app.command("dev-backend")
def dev_backend(
    token: Annotated[list[str], typer.Option("--token", help="A node token it accepts (repeatable).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3003,
    upstream: Annotated[
        bool,
        typer.Option(
            "--upstream",
            help="Behave as upstream's published backend: single-use tokens, no resume, replies without ids, "
            "no extensions, every result credited, a demo job 5 s after each register.",
        ),
    ] = False,
) -> None:
    """Run the reference backend: the upstream protocol, job submission and the Oracle."""
    from hypernode_host import logs
    from hypernode_host.backend.server import run_backend

    logs.configure(os.environ.get("HN_LOG_LEVEL", "INFO").upper(), list(token), os.environ.get("HN_LOG_FORMAT", "text"))
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line of our own is enough
    run_backend(host, port, list(token), upstream=upstream)


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
        with (
            exit_codes(),
            _waiting(f"waiting for the result of job {job.get('id') or '(new)'}", show=wait and not as_json),
        ):
            outcome = asyncio.run(submit_job(backend, job, wait=wait, wait_timeout=wait_timeout))
    except TimeoutError:
        typer.echo(
            json.dumps({"id": job.get("id"), "result": None, "verification": None})
            if as_json
            else f"no result within {wait_timeout:g} s",
            err=not as_json,
        )
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as exc:  # the network's, not ours (ours left exit_codes as a typer.Exit)
        raise fail(str(exc), EXIT_FAILED) from None
    _print_outcome(outcome, as_json)


@contextmanager
def _waiting(message: str, show: bool) -> Iterator[None]:
    """A spinner on stderr while a long operation runs (nothing when not shown or not a terminal)."""
    if not show:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(outcome))
        return
    result, verification = outcome.get("result"), outcome.get("verification")
    typer.echo(f"job {shown(outcome['id'])}")
    if result:  # the backend's and the job's values: escaped, the output cannot act on the terminal
        line = f"status {result['status']}, exit code {result['exitCode']}, {result.get('durationMs', 0)} ms"
        typer.echo(shown(line))
        typer.echo(shown_text(result.get("logs", "")))
    if verification:
        failed = [name for name, ok in verification["checks"].items() if not ok]
        typer.echo("verified" if verification["verified"] else f"NOT verified: {', '.join(failed)}")


@app.command()
def verify(
    result: Annotated[
        Path, typer.Argument(help="A job_result as JSON (or `submit --json`'s output).", exists=True, dir_okay=False)
    ],
    job: Annotated[
        Path | None, typer.Option(help="The job as the backend sent it, JSON.", exists=True, dir_okay=False)
    ] = None,
    node_key: Annotated[str | None, typer.Option(help="The node's public key (base58), as it registered.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the Oracle's checks on a result file; exit 0 only when none fails (skipped checks say why)."""
    from hypernode_host.backend.verify import report, verify_file

    with exit_codes():
        found, verification = verify_file(result, job, node_key)
    if as_json:
        typer.echo(json.dumps(verification.to_json()))
    else:
        for line in report(found, verification):
            typer.echo(line)
    raise typer.Exit(EXIT_OK if verification.verified else EXIT_FAILED)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    upstream: Annotated[
        bool,
        typer.Option(
            "--upstream",
            help="Against a backend that behaves as upstream's: a disconnect spends the token, a new one is "
            "given through HN_NODE_TOKEN_FILE, and every job must be credited exactly once.",
        ),
    ] = False,
) -> None:
    """Run four example jobs end to end on embedded defaults and say what happened."""
    from hypernode_host.node.demo import run_demo

    with exit_codes():
        ok = run_demo(as_json=as_json, upstream=upstream)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
def gpus(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    clear_quarantine: Annotated[
        bool, typer.Option("--clear-quarantine", help="Forget the workloads the poison-job breaker refuses.")
    ] = False,
) -> None:
    """The GPUs this node sees, the worker slots it would run, and the workloads it refuses."""
    from hypernode_host.bridge.stats import wire_gpu
    from hypernode_host.core.slots import plan_slots
    from hypernode_host.gpu.inventory import discover
    from hypernode_host.ops.views import gpus_view, quarantine_lines

    settings = load_settings()
    if clear_quarantine:
        with exit_codes(), _store(settings) as store:
            cleared = store.quarantine.clear(settings.node_name)
        if as_json:
            _echo_json({"cleared": cleared})
        else:
            typer.echo(f"cleared {cleared} quarantined workload(s) on {settings.node_name}")
        return
    found = discover(settings)
    slots = plan_slots(found, settings.cpu_slots, settings.gpus_per_worker)
    held = _quarantined(settings)
    if as_json:
        payload = {
            "gpus": [wire_gpu(g).model_dump() | g.details() for g in found],
            "slots": [{"slot": s.id, "queues": list(s.queues), "gpus": list(s.gpu_uuids)} for s in slots],
            "quarantine": [dataclasses.asdict(q) for q in held],
        }
        typer.echo(json.dumps(payload))
        return
    _console().print(gpus_view(found, slots))
    for line in quarantine_lines(held):
        typer.echo(line)


def _store(settings: Settings) -> Store:
    from hypernode_host.ops.check import REDIS_TIMEOUT_S
    from hypernode_host.state import Store

    return Store.open(settings, timeout_s=REDIS_TIMEOUT_S)


def _quarantined(settings: Settings) -> list[Any]:
    """The workloads the breaker refuses on this host; none listed while Redis does not answer."""
    from hypernode_host.state import RedisError

    try:
        with _store(settings) as store:
            return list(store.quarantine.all(settings.node_name))
    except RedisError:
        return []


@app.command("sim-gpu")
def sim_gpu(
    index: Annotated[int, typer.Argument(metavar="INDEX", help="The simulated GPU's index (see `gpus`).")],
    xid: Annotated[
        int | None, typer.Option("--xid", help="The driver reports this Xid for it (79: off the bus).")
    ] = None,
    lost: Annotated[bool, typer.Option("--lost", help="It falls off the bus: NVML cannot reach it.")] = False,
    busy: Annotated[bool, typer.Option("--busy", help="A compute process the node did not start runs on it.")] = False,
    idle: Annotated[bool, typer.Option("--idle", help="That foreign process is gone.")] = False,
    healthy: Annotated[bool, typer.Option("--healthy", help="Reachable again, its Xids cleared.")] = False,
    driver: Annotated[
        str | None, typer.Option("--driver", help="The host's driver is now VERSION (with --cuda).")
    ] = None,
    cuda: Annotated[str | None, typer.Option("--cuda", help="The newest CUDA that driver supports (12.4).")] = None,
) -> None:
    """Change a simulated GPU's state for the running node (HN_SIMULATE_GPUS), through its Redis."""
    from hypernode_host.ops.simulate import Change, simulate

    settings = quiet_settings()
    change = Change(xid=xid, lost=lost, busy=busy, idle=idle, healthy=healthy, driver=driver, cuda=cuda)
    try:
        with exit_codes(), _store(settings) as store:
            typer.echo(simulate(settings, store, index, change))
    except ValueError as exc:
        raise fail(str(exc)) from None


# Inspection: read the node's Redis with the layout the code writes ---------------------------


@contextmanager
def inspecting() -> Iterator[tuple[Settings, Store, Queues, list[Slot]]]:
    """Settings, a Store and Dramatiq's queues with short timeouts, and this node's slots; closed afterwards."""
    from hypernode_host.gpu.inventory import plan_node_slots
    from hypernode_host.ops.check import REDIS_TIMEOUT_S
    from hypernode_host.state import Store
    from hypernode_host.tasks.dramatiq_redis import Queues

    settings = quiet_settings()
    with exit_codes(), Store.open(settings, timeout_s=REDIS_TIMEOUT_S) as store:
        queues = Queues.open(settings, timeout_s=REDIS_TIMEOUT_S)
        try:
            yield settings, store, queues, plan_node_slots(settings)
        finally:
            queues.close()


def quiet_settings() -> Settings:
    """Settings for a command whose output is a report: library INFO lines would only clutter it."""
    settings = load_settings()
    root = logging.getLogger()
    root.setLevel(max(logging.WARNING, root.level))
    return settings


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _console() -> Console:
    from rich.console import Console

    return Console()


@app.command()
def queue(as_json: JsonOption = False) -> None:
    """Each queue: ready, delayed, in flight, dead-lettered, and the age of the oldest message."""
    from hypernode_host.ops.inspect import known_queues
    from hypernode_host.ops.views import queues_table

    with inspecting() as (_, store, queues, slots):
        stats = queues.stats(known_queues(store, slots))
    if as_json:
        _echo_json({"queues": stats})
    else:
        _console().print(queues_table(stats))


@app.command()
def jobs(
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    status: Annotated[Status | None, typer.Option(help="Only jobs that ended with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many jobs, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent jobs, newest first: state, status, slot, GPUs, duration and exit code."""
    from hypernode_host.core.clock import now_ms
    from hypernode_host.ops.inspect import recent_jobs
    from hypernode_host.ops.views import jobs_table

    with inspecting() as (_, store, _queues, slots):
        rows = recent_jobs(store, slots, limit=limit, state=state, status=status)
    if as_json:
        _echo_json({"jobs": rows})
    else:
        _console().print(jobs_table(rows, now_ms()))


# A job id may begin with '-' ("-x" is a valid id): one that is no option of the command is taken as the
# id; one that is (`--json`) is given after `--`, as in `hypernode-host job -- --json`.
IDS_MAY_BEGIN_WITH_DASH = {"ignore_unknown_options": True}


@app.command(context_settings=IDS_MAY_BEGIN_WITH_DASH)
def job(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
    lines: Annotated[int, typer.Option(min=0, help="Log lines to show from the end.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """One job: its spec (summarised), timeline, exit code, proofs and the end of its logs."""
    from hypernode_host.ops.inspect import job_detail
    from hypernode_host.ops.views import job_view

    with inspecting() as (_, store, _queues, _slots):
        detail = job_detail(store, job_id, tail_lines=lines)
    if as_json:
        _echo_json(detail)
    else:
        _console().print(job_view(detail))


@app.command()
def artifacts(
    job_id: Annotated[str, typer.Argument(help="The job.")],
    out: Annotated[Path, typer.Option(help="Directory to write the job's output files into.", file_okay=False)],
    as_json: JsonOption = False,
) -> None:
    """Write a finished job's output files (its /out) into DIR, each checked against its signed listing."""
    from hypernode_host.ops.artifacts import write_artifacts

    with inspecting() as (_, store, _queues, _slots):
        written = write_artifacts(store, job_id, out)
    if as_json:
        _echo_json({"id": job_id, "artifacts": written})
        return
    from hypernode_host.backend.verify import printable

    for item in written:
        typer.echo(f"{item.sha256}  {item.size:>10}  {printable(item.path)}")


@app.command()
def replay(
    job_id: Annotated[str, typer.Argument(help="A finished job of this node.")],
    as_json: JsonOption = False,
) -> None:
    """Run a finished job again in the same image ID; exit 0 when fullLogsHash and artifactsRoot match."""
    from hypernode_host.backend.verify import printable
    from hypernode_host.ops.replay import replay as run_replay

    with inspecting() as (settings, store, _queues, _slots), exit_codes():
        found = run_replay(settings, store, job_id)
    if as_json:
        _echo_json(found.to_json())
    else:
        typer.echo(f"job {printable(job_id)} replayed as {found.replay_id} in {printable(found.image)}: {found.status}")
        typer.echo(
            f"fullLogsHash  {'match' if found.logs_match else 'DIFFER'}  "
            f"{printable(found.original_full_logs_hash)} / {found.full_logs_hash}"
        )
        typer.echo(
            f"artifactsRoot {'match' if found.artifacts_match else 'DIFFER'}  "
            f"{printable(found.original_artifacts_root)} / {found.artifacts_root}"
        )
    raise typer.Exit(EXIT_OK if found.matches else EXIT_FAILED)


@app.command()
def workers(as_json: JsonOption = False) -> None:
    """Each worker slot: its queues and GPUs, whether it is alive, the job it runs, its last heartbeat."""
    from hypernode_host.core.clock import now_ms
    from hypernode_host.ops.inspect import hosts_view, workers_view
    from hypernode_host.ops.views import workers_table

    with inspecting() as (settings, store, _queues, slots):
        rows = workers_view(store, slots, settings.node_name)
    if as_json:
        _echo_json({"workers": rows, "hosts": hosts_view(rows)})
    else:
        _console().print(workers_table(rows, now_ms()))


dead_app = typer.Typer(help="Dead-lettered jobs (their run raised): list, requeue, purge.", no_args_is_help=False)
app.add_typer(dead_app, name="dead")


@dead_app.callback(invoke_without_command=True)
def dead(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List dead-lettered jobs (with no subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    from hypernode_host.core.clock import now_ms
    from hypernode_host.ops.deadletters import dead_letters
    from hypernode_host.ops.inspect import known_queues
    from hypernode_host.ops.views import dead_table

    with inspecting() as (_, store, queues, slots):
        rows = dead_letters(store, queues, known_queues(store, slots))
    if as_json:
        _echo_json({"dead": rows})
    else:
        _console().print(dead_table(rows, now_ms()))


@dead_app.command("requeue", context_settings=IDS_MAY_BEGIN_WITH_DASH)
def dead_requeue(
    job_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The job to run again.")] = None,
    requeue_all: Annotated[bool, typer.Option("--all", help="Requeue every dead-lettered job.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Put a dead-lettered job (or --all) back on its queue; a worker runs it again."""
    from hypernode_host.ops.deadletters import requeue_dead
    from hypernode_host.ops.inspect import known_queues

    if (job_id is None) == (not requeue_all):
        raise fail("give a job ID or --all")
    with inspecting() as (_, store, queues, slots), exit_codes():
        moved = requeue_dead(store, queues, known_queues(store, slots), job_id)
    if as_json:
        _echo_json({"requeued": moved})
    else:
        typer.echo(f"requeued {len(moved)} job(s)" + (f": {shown(', '.join(moved))}" if moved else ""))


@dead_app.command("purge")
def dead_purge(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Drop every dead-lettered job; each unfinished one gets an error result for the backend."""
    from hypernode_host.core.proofs import NodeKey
    from hypernode_host.ops.deadletters import purge_dead
    from hypernode_host.ops.inspect import known_queues

    if not yes and not typer.confirm("Drop every dead-lettered job?"):
        raise typer.Exit(EXIT_FAILED)
    with inspecting() as (settings, store, queues, slots), exit_codes():
        dropped = purge_dead(store, queues, known_queues(store, slots), NodeKey.load_or_create(settings.key_file))
    if as_json:
        _echo_json({"purged": dropped})
    else:
        typer.echo(f"purged {len(dropped)} job(s)" + (f": {shown(', '.join(dropped))}" if dropped else ""))


@app.command(context_settings=IDS_MAY_BEGIN_WITH_DASH)
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job to cancel.")], as_json: JsonOption = False
) -> None:
    """Cancel a job: a running one is stopped, a queued one never starts. Exit 1 if it already ended."""
    from hypernode_host.ops.control import cancel_job

    with inspecting() as (_, store, _queues, _slots), exit_codes():
        state = cancel_job(store, job_id)
    requested = state in (JobState.QUEUED, JobState.RUNNING)
    if as_json:
        typer.echo(json.dumps({"id": job_id, "state": state, "cancel_requested": requested}))
    elif requested:
        typer.echo(f"job {shown(job_id)}: cancel requested ({state})")
    else:
        typer.echo(f"job {shown(job_id)}: already {state}; nothing to cancel", err=True)
    raise typer.Exit(EXIT_OK if requested else EXIT_FAILED)


@app.command()
def top(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 2.0,
    iterations: Annotated[int, typer.Option(min=0, help="Stop after this many refreshes (0: until Ctrl-C).")] = 0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Recent jobs shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one snapshot as JSON and exit.")] = False,
) -> None:
    """A live view of the node: summary, queues, workers and recent jobs."""
    import time

    from rich.live import Live

    from hypernode_host.ops import inspect as inspection

    with inspecting() as (settings, store, queues, slots):
        if as_json:
            _echo_json(
                {
                    "node": inspection.node_summary(store),
                    "queues": queues.stats(inspection.known_queues(store, slots)),
                    "workers": (rows := inspection.workers_view(store, slots, settings.node_name)),
                    "hosts": inspection.hosts_view(rows),
                    "jobs": inspection.recent_jobs(store, slots, limit=limit),
                }
            )
            return
        if once:
            _console().print(_snapshot(settings, store, queues, slots, limit))
            return
        with Live(_snapshot(settings, store, queues, slots, limit), console=_console(), auto_refresh=False) as live:
            done = 1
            while not iterations or done < iterations:
                time.sleep(interval)
                live.update(_snapshot(settings, store, queues, slots, limit), refresh=True)
                done += 1


def _snapshot(settings: Settings, store: Store, queues: Queues, slots: list[Slot], limit: int) -> RenderableType:
    from rich.console import Group

    from hypernode_host.core.clock import now_ms
    from hypernode_host.ops import inspect as inspection
    from hypernode_host.ops import views
    from hypernode_host.ops.check import token_fix

    now = now_ms()
    return Group(
        views.summary_line(inspection.node_summary(store), token_fix(settings)),
        views.queues_table(queues.stats(inspection.known_queues(store, slots))),
        views.workers_table(inspection.workers_view(store, slots, settings.node_name), now),
        views.jobs_table(inspection.recent_jobs(store, slots, limit=limit), now),
    )


@app.command()
def ledger(
    since: Annotated[
        str | None, typer.Option(help="Jobs received from then: 2026-12-01, 2026-12-01T10:00Z, 7d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Jobs received before then (same forms).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the jobs as CSV.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs and the summary as JSON.")] = False,
) -> None:
    """Every job the node took (its own record, kept in HN_STATE_DIR): export it, or see a summary."""
    from hypernode_host.ops.ledger import read_ledger, to_csv

    if as_csv and as_json:
        raise fail("give --csv or --json, not both")
    settings = quiet_settings()
    with exit_codes():
        export = read_ledger(settings, since, until)
    if as_csv:
        typer.echo(to_csv(export.rows), nl=False)
    elif as_json:
        _echo_json({"jobs": export.rows, "summary": export.summary})
    else:
        from hypernode_host.ops.views import ledger_view

        _console().print(ledger_view(export))


# Health ---------------------------------------------------------------------------------------


@app.command()
def check(
    bridge_only: Annotated[bool, typer.Option("--bridge", help="Check the bridge (and Redis) only.")] = False,
    slot: Annotated[list[int] | None, typer.Option(help="Check this slot's worker (and Redis, Docker) only.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Exit 0 when the node works: bridge registered and heartbeating, Redis and Docker up, every worker alive."""
    from hypernode_host.ops.check import check_node
    from hypernode_host.ops.findings import Level, healthy

    settings = quiet_settings()
    whole = not bridge_only and not slot
    with exit_codes():
        findings = check_node(
            settings, bridge=whole or bridge_only, slots=None if whole else (slot or []), docker=whole or bool(slot)
        )
    ok = healthy(findings)
    if as_json:
        _echo_json({"healthy": ok, "checks": findings})
    elif ok:
        typer.echo("healthy: " + "; ".join(f.line() for f in findings))
    else:
        for finding in findings:
            if finding.level is Level.FAIL:
                typer.echo(finding.line(), err=True)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
def doctor(
    toolkit_config: Annotated[Path, typer.Option(help="The NVIDIA Container Toolkit's config file.")] = Path(
        "/etc/nvidia-container-runtime/config.toml"
    ),
    as_json: JsonOption = False,
) -> None:
    """Pre-flight for operators: Docker, NVIDIA runtime and toolkit, Redis, disk, images, node files."""
    from hypernode_host.ops.doctor import run_doctor
    from hypernode_host.ops.findings import healthy
    from hypernode_host.ops.views import findings_table

    settings = quiet_settings()
    with exit_codes():
        findings = run_doctor(settings, toolkit_config)
    if as_json:
        _echo_json({"ok": healthy(findings), "checks": findings})
    else:
        _console().print(findings_table(findings))
    raise typer.Exit(EXIT_OK if healthy(findings) else EXIT_FAILED)


def main() -> None:
    logging.captureWarnings(True)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
