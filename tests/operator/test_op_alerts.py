"""The shipped Prometheus alert rules (deploy/prometheus/alerts.yml): valid for promtool, firing on the series
their unit tests give (alerts.test.yml), and written against metrics the node really exports.

promtool comes from `make services` (Debian's prometheus package); without it these tests fail, never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_op_uptime_events import metric_samples, seed

from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
NAME = re.compile(r"\bhn_[a-z0-9_]+\b")
# What the issue asks the rules to cover, and the alert that does.
COVERED = {
    "node offline": "HypernodeNodeOffline",
    "jobs failing": "HypernodeJobsFailing",
    "queue backing up": "HypernodeQueueBackingUp",
    "GPU unhealthy": "HypernodeGpuUnhealthy",
    "disk floor": "HypernodeDiskFloor",
    "outbox growing": "HypernodeOutboxGrowing",
}


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run `make services` (it installs Debian's prometheus package)")
    done = subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> dict[str, str]:
    """alert name -> its expression, read from the file's lines (promtool checks the YAML itself)."""
    found: dict[str, str] = {}
    name = ""
    lines = (RULES / "alerts.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- alert: (\w+)$", line):
            name = m[1]
        elif m := re.match(r"(\s*)expr: (.*)$", line):
            indent, text = len(m[1]), m[2]
            if text.startswith(">"):  # a folded block: the lines indented deeper
                text = " ".join(_block(lines, i + 1, indent))
            found[name] = text
    return found


def _block(lines: list[str], start: int, indent: int) -> list[str]:
    out = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        out.append(line.strip())
    return out


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    assert f"SUCCESS: {len(rules())} rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_the_rules_cover_what_costs_an_operator_money() -> None:
    assert set(COVERED.values()) <= rules().keys()


def test_every_metric_a_rule_names_is_one_the_node_exports(redis_server: RedisProcess, store: Store) -> None:
    seed(store)  # every family has samples: uptime, events, an unhealthy slot, a heartbeat
    exported = {name for name, _ in metric_samples(redis_server)}
    named = {metric for expr in rules().values() for metric in NAME.findall(expr)}
    assert named and named <= exported, sorted(named - exported)
