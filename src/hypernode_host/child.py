"""The processes `up` starts (the bridge, one worker per slot), run without the CLI.

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
        from hypernode_host.bridge.client import run_bridge

        run_bridge(settings)
    else:
        from hypernode_host.tasks.worker import run_worker

        run_worker(settings, int(argv[argv.index("--slot") + 1]))


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
