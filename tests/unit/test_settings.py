"""Settings: one frozen object from a mapping; bad values are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from hypernode_host.errors import ConfigError
from hypernode_host.settings import Settings


def test_upstream_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"HN_STATE_DIR": str(tmp_path)})  # no URL `up` wrote there
    assert settings.endpoint == "wss://nodes.hypernodesolana.org"
    assert settings.heartbeat_interval == 10
    assert settings.job_timeout == 300
    assert settings.max_log_size == 10_000
    assert settings.reconnect_delay == 5
    assert settings.redis_url is None and settings.own_redis  # the node's own Redis (state.connect finds it)
    assert settings.job_image == "python:3.11-slim"
    assert settings.cpu_slots == 1
    assert settings.simulate_gpus is None


def test_values_come_from_the_mapping_only() -> None:
    settings = Settings.from_env(
        {
            "HN_NODE_TOKEN": "secret",
            "HN_ENDPOINT": "ws://127.0.0.1:3003",
            "HN_HEARTBEAT_INTERVAL": "2.5",
            "HN_CPU_SLOTS": "0",
            "HN_SIMULATE_GPUS": "2xRTX4090:24576",
            "HN_ALLOWED_IMAGES": "ghcr.io/acme/*, python:3.12-slim",
            "HN_KEY_FILE": "/var/lib/hn/key",
            "PATH": "/ignored",
        }
    )
    assert settings.token() == "secret"
    assert settings.heartbeat_interval == 2.5
    assert settings.cpu_slots == 0
    assert settings.allowed_images == ("ghcr.io/acme/*", "python:3.12-slim")
    assert settings.key_file == Path("/var/lib/hn/key")
    assert "secret" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValidationError):
        settings.job_timeout = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HN_HEARTBEAT_INTERVAL", "-1", "HN_HEARTBEAT_INTERVAL: Input should be greater than 0 (got '-1')"),
        ("HN_HEARTBEAT_INTERVAL", "nan", "HN_HEARTBEAT_INTERVAL"),
        ("HN_JOB_TIMEOUT", "ten", "HN_JOB_TIMEOUT: Input should be a valid integer"),
        ("HN_ENDPOINT", "http://x", "HN_ENDPOINT: Value error, must start with ws:// or wss://"),
        ("HN_REDIS_URL", "localhost", "HN_REDIS_URL"),
        ("HN_LOG_LEVEL", "LOUD", "HN_LOG_LEVEL"),
        ("HN_CPU_SLOTS", "-2", "HN_CPU_SLOTS"),
    ],
)
def test_bad_values_are_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_token_is_required_only_where_used() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigError, match="HN_NODE_TOKEN or HN_NODE_TOKEN_FILE is required"):
        settings.token()
    with pytest.raises(ConfigError):
        Settings.from_env({"HN_NODE_TOKEN": "   "}).token()


def test_the_token_file_is_read_at_each_call_and_wins_over_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  tok-first\n")
    settings = Settings.from_env({"HN_NODE_TOKEN": "tok-variable", "HN_NODE_TOKEN_FILE": str(path)})
    assert settings.token() == "tok-first"
    path.write_text("tok-second\n")
    assert settings.token() == "tok-second"  # an operator replaces the file: no restart
    assert Settings.from_env({"HN_NODE_TOKEN": "tok-variable", "HN_NODE_TOKEN_FILE": ""}).token() == "tok-variable"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        (b"", "must hold one token"),
        (b"two tokens\n", "must hold one token"),
        (b"a\nb\n", "must hold one token"),
        (b"x" * 5000, "must hold one token"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_a_token_file_that_holds_no_token_is_one_line_without_its_content(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env({"HN_NODE_TOKEN_FILE": str(path)}).token()
    assert str(caught.value).startswith(f"HN_NODE_TOKEN_FILE {path}: ")
    assert "tokens" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_token_value_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"HN_NODE_TOKEN": "x", "HN_JOB_TIMEOUT": "0"})
    assert "'x'" not in str(caught.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


def test_cli_missing_token_is_one_line_and_exit_2() -> None:
    done = _cli("--redis-url", "redis://127.0.0.1:1/0", "bridge")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: HN_NODE_TOKEN or HN_NODE_TOKEN_FILE is required (the node token from the Hypernode dashboard)"
    ]


def test_cli_bad_option_value_is_one_line_and_exit_2() -> None:
    done = _cli("--heartbeat-interval", "0", "up", env={"HN_NODE_TOKEN": "t"})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "HN_HEARTBEAT_INTERVAL: Input should be greater than 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_prints_the_agent_version_for_bug_reports() -> None:
    from hypernode_host import AGENT_VERSION

    done = _cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"hypernode-host {AGENT_VERSION}\n", "")
    assert _cli("--redis-url", "redis://127.0.0.1:1/0", "--version").stdout == done.stdout  # before any command


ROOT = Path(__file__).resolve().parents[2]


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def test_env_example_names_every_setting_with_a_valid_value() -> None:
    example = _env_example()
    aliases = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert aliases <= example.keys(), f"missing from .env.example: {sorted(aliases - example.keys())}"
    settings = Settings.from_env({**example, "HN_NODE_TOKEN": "t"})  # the example's values all validate
    assert settings.endpoint == "wss://nodes.hypernodesolana.org" and settings.metrics_port == 0
    assert settings.simulate_gpus is None and settings.allowed_images == ()


# The public command line, which operators' scripts depend on: each global option keeps its name and variable.
PUBLIC_OPTIONS = {
    "--token": "HN_NODE_TOKEN",
    "--token-file": "HN_NODE_TOKEN_FILE",
    "--endpoint": "HN_ENDPOINT",
    "--heartbeat-interval": "HN_HEARTBEAT_INTERVAL",
    "--job-timeout": "HN_JOB_TIMEOUT",
    "--max-log-size": "HN_MAX_LOG_SIZE",
    "--reconnect-delay": "HN_RECONNECT_DELAY",
    "--reconnect-max-delay": "HN_RECONNECT_MAX_DELAY",
    "--redis-url": "HN_REDIS_URL",
    "--job-image": "HN_JOB_IMAGE",
    "--gpu-job-image": "HN_GPU_JOB_IMAGE",
    "--allowed-images": "HN_ALLOWED_IMAGES",
    "--simulate-gpus": "HN_SIMULATE_GPUS",
    "--cpu-slots": "HN_CPU_SLOTS",
    "--gpus-per-worker": "HN_GPUS_PER_WORKER",
    "--key-file": "HN_KEY_FILE",
    "--state-dir": "HN_STATE_DIR",
    "--node-name": "HN_NODE_NAME",
    "--pip-index-url": "HN_PIP_INDEX_URL",
    "--pip-find-links": "HN_PIP_FIND_LINKS",
    "--pull-timeout": "HN_PULL_TIMEOUT",
    "--metrics-port": "HN_METRICS_PORT",
    "--metrics-host": "HN_METRICS_HOST",
    "--log-level": "HN_LOG_LEVEL",
    "--log-format": "HN_LOG_FORMAT",
    "--notify-url": "HN_NOTIFY_URL",
    "--notify-format": "HN_NOTIFY_FORMAT",
    "--notify-events": "HN_NOTIFY_EVENTS",
    "--notify-offline-after": "HN_NOTIFY_OFFLINE_AFTER",
}


def _global_options() -> dict[str, Any]:
    from typer.main import get_command

    from hypernode_host.cli import app

    return {opt: param for param in get_command(app).params for opt in param.opts}


def _settings() -> dict[str, FieldInfo]:
    return dict(Settings.model_fields)


def test_every_setting_is_exactly_one_global_option_read_from_its_variable() -> None:
    assert all(field.alias for field in Settings.model_fields.values())  # every field is a setting
    by_variable = Counter(param.envvar for param in set(_global_options().values()) if param.envvar)
    assert by_variable == Counter(field.alias for field in _settings().values())


def test_each_option_is_described_by_its_field() -> None:
    options = {param.envvar: param for param in _global_options().values()}
    for name, field in _settings().items():
        option = options[field.alias]
        assert option.help == field.description and field.description, name
        assert option.name == name  # the callback hands it on by the field's name


def test_the_public_global_options_keep_their_names() -> None:
    options = {opt: param.envvar for opt, param in _global_options().items()}
    assert PUBLIC_OPTIONS.items() <= options.items()


def test_each_option_reaches_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hypernode_host.cli import app

    for field in _settings().values():
        monkeypatch.setenv(str(field.alias), "")  # recorded, so whatever the CLI writes is undone after
    args = [arg for opt, var in PUBLIC_OPTIONS.items() for arg in (opt, f"given {var}")]
    done = CliRunner().invoke(app, [*args, "gpus", "--help"])  # the options run; gpus only prints its help
    assert done.exit_code == 0, done.output
    assert {var: os.environ[var] for var in PUBLIC_OPTIONS.values()} == {
        v: f"given {v}" for v in PUBLIC_OPTIONS.values()
    }


def test_help_lists_every_setting_with_its_variable_and_type() -> None:
    done = _cli("--help", env={"COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith("│ --")}
    for opt, param in _global_options().items():
        if param.envvar:
            assert f"[env var: {param.envvar}]" in lines[opt]
    assert "<int>" in lines["--job-timeout"] and "<float>" in lines["--heartbeat-interval"]
    assert "<Path>" in lines["--key-file"] and "<str>" in lines["--token"]


def test_a_bad_value_reads_the_same_from_the_option_and_the_variable() -> None:
    by_option = _cli("--job-timeout", "ten", "--token", "t", "up")
    by_variable = _cli("up", env={"HN_JOB_TIMEOUT": "ten", "HN_NODE_TOKEN": "t"})
    assert by_option.returncode == by_variable.returncode == 2
    assert (
        by_option.stderr
        == by_variable.stderr
        == (
            "error: HN_JOB_TIMEOUT: Input should be a valid integer, unable to parse string as an integer (got 'ten')\n"
        )
    )
