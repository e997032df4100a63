"""What `check` and `top` tell an operator whose token the backend refused: the backend's text, escaped,
and what to do, which depends on where the token comes from."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hypernode_host.ops.check import check_bridge, token_fix
from hypernode_host.ops.findings import Level
from hypernode_host.ops.inspect import NodeSummary
from hypernode_host.ops.views import summary_line
from hypernode_host.settings import Settings
from hypernode_host.state.records import NodeRecord

NOW = 1_800_000_000_000
WITH_VARIABLE = Settings.from_env({"HN_NODE_TOKEN": "t"})


def with_file(path: Path) -> Settings:
    return Settings.from_env({"HN_NODE_TOKEN_FILE": str(path)})


def test_a_refused_token_fails_the_bridge_check_with_the_backends_text_and_the_fix(tmp_path: Path) -> None:
    node = NodeRecord(node_id="n-1", heartbeat_at=NOW, refused="Token already used", refused_at=NOW)

    finding = check_bridge(node, with_file(tmp_path / "token"), NOW)

    assert (finding.level, finding.detail) == (Level.FAIL, "token refused by the backend: Token already used")
    assert finding.fix.startswith(f"write a new token from the Hypernode dashboard to {tmp_path / 'token'}")


def test_with_the_token_in_a_variable_the_fix_is_a_restart_or_a_token_file() -> None:
    fix = token_fix(WITH_VARIABLE)
    assert "restart the node with it in HN_NODE_TOKEN" in fix and "HN_NODE_TOKEN_FILE" in fix


def test_the_backends_text_cannot_forge_or_restyle_the_operators_lines() -> None:
    node = NodeRecord(refused="Invalid token\n\x1b[2Jhealthy: all good [bold]x[/bold]")

    finding = check_bridge(node, WITH_VARIABLE, NOW)

    assert "\n" not in finding.line() and "\x1b" not in finding.line()
    assert "\\n\\x1b[2J" in finding.detail


def test_a_node_no_longer_refused_is_judged_by_its_heartbeat() -> None:
    node = NodeRecord(node_id="n-1", heartbeat_at=NOW - 500)
    assert check_bridge(node, WITH_VARIABLE, NOW).level is Level.OK


def test_top_puts_the_refusal_first_with_what_to_do() -> None:
    summary = NodeSummary(
        node_id="n-1",
        registered_at=NOW,
        heartbeat_age_s=40.0,
        reconnects=1,
        jobs=3,
        queued=1,
        running=1,
        outbox=2,
        by_status={"completed": 1},
        workers_alive=1,
        refused="Token already used [red]x[/red]",
        results_rejected=1,
    )
    console = Console(width=400, record=True, color_system=None)

    console.print(summary_line(summary, token_fix(WITH_VARIABLE)))

    first, second = console.export_text().splitlines()
    assert first.startswith("token refused by the backend: Token already used [red]x[/red] (get a new token")
    assert "outbox 2, 1 results rejected by the backend" in second
