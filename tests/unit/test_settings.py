"""Settings: one frozen object from a mapping; bad values are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

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
    with pytest.raises(ConfigError, match="HN_NODE_TOKEN is required"):
        settings.token()
    with pytest.raises(ConfigError):
        Settings.from_env({"HN_NODE_TOKEN": "   "}).token()


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
        "error: HN_NODE_TOKEN is required (the node token from the Hypernode dashboard)"
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


def test_every_setting_is_a_global_option() -> None:
    from hypernode_host.cli import _OPTION_ENV

    assert set(_OPTION_ENV.values()) == {field.alias for field in Settings.model_fields.values() if field.alias}
