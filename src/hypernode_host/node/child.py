"""The processes `up` starts (the bridge, one worker per slot, the notifier), run without the CLI.

Typer, click and the CLI module cost ~2 MB of RSS in every process; a child needs none of them.
Exit codes and the one-line errors are the CLI's (exitcodes.describe_exit).
"""

from __future__ import annotations

import sys

from hypernode_host.exitcodes import EXIT_OK, describe_exit
from hypernode_host.settings import Settings


def run(argv: list[str]) -> None:
    settings = Settings.from_env()
    from hypernode_host import logs

    secret = settings.node_token.get_secret_value() if settings.node_token else ""
    logs.configure(settings.log_level, [secret], settings.log_format)
    if argv[0] == "bridge":
        bridge_process(settings)
    elif argv[0] == "notify":
        notify_process(settings)
    else:
        worker_process(settings, int(argv[argv.index("--slot") + 1]))


def bridge_process(settings: Settings) -> None:
    """The bridge until SIGTERM, serving the node's metrics too when HN_METRICS_PORT is set."""
    from hypernode_host.bridge.client import run_bridge

    metrics = None
    if settings.metrics_port:  # prometheus_client, http.server and the views cost ~2 MB: only when served
        from hypernode_host.ops.metrics import start_metrics_server

        metrics = start_metrics_server(settings)
    try:
        run_bridge(settings)
    finally:
        if metrics is not None:
            metrics.close()


def notify_process(settings: Settings) -> None:
    """The notifier (HN_NOTIFY_URL) until SIGTERM."""
    from hypernode_host.node.signals import stopped_by_signals
    from hypernode_host.ops.notify import run_notifier

    run_notifier(settings, stopped_by_signals())


def worker_process(settings: Settings, slot: int) -> None:
    """One slot's worker until SIGTERM."""
    from hypernode_host.node.signals import stopped_by_signals
    from hypernode_host.tasks.worker import run_worker

    run_worker(settings, slot, stopped_by_signals())


def main(argv: list[str]) -> int:
    try:
        run(argv)
    except Exception as exc:
        described = describe_exit(exc)
        if described is None:
            raise
        code, message = described
        print(f"error: {message}", file=sys.stderr)  # the CLI's one-line form (cli.fail)
        return code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
