"""How every process of the agent ends: its exit codes, and which error ends it with which.

The CLI, the children `up` starts (hypernode_host.node.child) and `up` itself share these, so an
operator's script and `up`'s supervisor read the same number whichever process exited.
"""

from __future__ import annotations

import os
import sys

from hypernode_host.errors import ConfigError, HypernodeError

EXIT_OK = 0
EXIT_FAILED = 1  # an error of ours or of Redis, said in one line
EXIT_USAGE = 2  # a bad setting or command line (a missing token or token file too): fix it and run again
# No other code: a refused token ends no process (the bridge waits for a new one, `up` goes on).


def describe_exit(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and the one-line message for an error that ends a process; None for any other
    exception (a bug), whose traceback says more than a line would."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, _one_line(str(exc))
    if isinstance(exc, HypernodeError):
        return EXIT_FAILED, _one_line(str(exc))
    # Only a process that imported redis can raise its errors: this module stays free of the SDK.
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.RedisError):
        from hypernode_host.logs import redact

        url = redact(os.environ.get("HN_REDIS_URL") or "the configured Redis")
        return EXIT_FAILED, _one_line(f"Redis at {url}: {redact(str(exc))}")
    return None


def _one_line(message: str) -> str:
    return " ".join(message.splitlines())
