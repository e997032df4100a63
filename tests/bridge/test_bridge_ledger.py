"""The ledger, written by the bridge against both backend modes: each job it took, its result as sent and
what the backend said (acknowledged with the credit the reference backend reports, or rejected), read
back by `hypernode-host ledger` after the bridge is gone."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridgekit import BridgeThread, Stack

from hypernode_host.state.ledger import Ledger
from support import wait_for


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hypernode_host", "ledger", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_job_taken_is_in_the_ledger_with_what_the_backend_said(stack: Stack) -> None:
    # Jobs refused at intake (an image not allowed): their error results need no worker.
    taken = stack.job(command="true", image="not/allowed:1")
    stray = stack.job(command="true", image="not/allowed:2")
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        stack.backend.send_job(taken)
        stack.backend.push({"type": "job", **stray}, node_id)  # the backend never recorded it: "Job not found"
        wait_for(lambda: stack.record(taken["id"]).get("state") == "reported", timeout=30)
        wait_for(lambda: stack.record(stray["id"]).get("state") == "rejected", timeout=30)
        stored = json.loads(stack.record(taken["id"])["result"])

    ledger = Ledger.in_dir(Path(stack.env["HN_STATE_DIR"]))
    rows = {row.id: row for row in ledger.rows()}
    ledger.close()
    row = rows[taken["id"]]
    assert row.received_ms and row.sent_ms and row.acknowledged_ms and row.rejected_ms is None
    assert (row.status, row.reason, row.result_digest) == ("error", stored["reason"], stored["executionHash"])
    assert (row.started_ms, row.finished_ms, row.duration_ms) == (
        stored["startedAt"],
        stored["completedAt"],
        stored["durationMs"],
    )
    assert row.credit == (None if stack.upstream else 1.0)  # upstream reports no credit
    rejected = rows[stray["id"]]
    assert rejected.rejection == "Job not found" and rejected.acknowledged_ms is None

    exported = json.loads(cli(stack, "--json"))
    assert {job["id"] for job in exported["jobs"]} == {taken["id"], stray["id"]}
    summary = exported["summary"]
    assert (summary["jobs"], summary["acknowledged"], summary["rejected"]) == (2, 1, 1)
    assert summary["by_status"] == {"error": 2} and summary["success_rate"] == 0
    assert [u["window"] for u in summary["uptime"]] == ["24h", "7d", "30d"]
    assert summary["uptime"][0]["up_s"] > 0  # the bridge was registered meanwhile
    table = list(csv.DictReader(io.StringIO(cli(stack, "--since", "7d", "--csv"))))
    assert {r["id"] for r in table} == {taken["id"], stray["id"]}
    assert cli(stack, "--csv", "--until", "2000-01-01").count("\n") == 1  # the header alone
    today = datetime.now(UTC).date()
    ranged = json.loads(cli(stack, "--since", str(today), "--until", str(today + timedelta(days=1)), "--json"))
    assert len(ranged["jobs"]) == 2
    assert "success rate" in cli(stack)
