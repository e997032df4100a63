"""Exit codes: one definition, one mapping from error to code and one-line message."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from hypernode_host import exitcodes
from hypernode_host.errors import ConfigError, ContainerError, HypernodeError, JobRejected
from hypernode_host.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe_exit

SRC = Path(__file__).resolve().parents[2] / "src" / "hypernode_host"


def test_the_codes_operators_scripts_read() -> None:
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE) == (0, 1, 2)
    # 3 (a refused token) is gone: a refused token ends no process, the bridge waits for a new one.
    assert sorted(name for name in vars(exitcodes) if name.startswith("EXIT_")) == [
        "EXIT_FAILED",
        "EXIT_OK",
        "EXIT_USAGE",
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("HN_JOB_TIMEOUT: Input should be greater than 0"), EXIT_USAGE),
        (ContainerError("Docker engine unreachable"), EXIT_FAILED),
        (JobRejected("job id too long"), EXIT_FAILED),
        (HypernodeError("something of ours"), EXIT_FAILED),
    ],
)
def test_our_errors_end_with_their_code_and_their_message(error: HypernodeError, code: int) -> None:
    assert describe_exit(error) == (code, str(error))


def test_a_redis_error_names_the_url_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HN_REDIS_URL", "redis://:hunter2@10.0.0.5:6379/0")
    code, message = describe_exit(redis.ConnectionError("Error 111 connecting to 10.0.0.5:6379.")) or (None, "")
    assert code == EXIT_FAILED
    assert message == "Redis at redis://:***@10.0.0.5:6379/0: Error 111 connecting to 10.0.0.5:6379."


def test_a_redis_error_without_a_configured_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HN_REDIS_URL", "")  # empty: the node's own Redis
    assert describe_exit(redis.TimeoutError("Timeout reading from socket")) == (
        EXIT_FAILED,
        "Redis at the configured Redis: Timeout reading from socket",
    )


def test_the_message_is_one_line() -> None:
    assert describe_exit(ContainerError("cannot create container: bad\nrequest\r\nbody")) == (
        EXIT_FAILED,
        "cannot create container: bad request body",
    )


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("x"), OSError("disk")])
def test_anything_else_is_a_bug_that_keeps_its_traceback(error: Exception) -> None:
    assert describe_exit(error) is None


def test_the_module_imports_no_sdk() -> None:
    code = "import sys, hypernode_host.exitcodes; print(sorted({'redis', 'docker', 'typer'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_no_other_module_defines_an_exit_code() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "exitcodes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.Tuple):
                names = [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if any(n.startswith("EXIT_") for n in names) and all(
                    isinstance(v, ast.Constant) and type(v.value) is int for v in values
                ):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []
