"""`hypernode-host demo --json` and `demo --upstream --json`: every job ends as expected, credited once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hypernode_host.tasks.containers import DockerRuntime
from support import TEST_IMAGE


def test_demo_runs_four_jobs_end_to_end(docker_runtime: DockerRuntime) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env["HN_JOB_IMAGE"] = TEST_IMAGE
    done = subprocess.run(
        [sys.executable, "-m", "hypernode_host", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["leftoverContainers"] == 0
    outcome = {
        job["id"].rsplit("-", 1)[-1]: (job["status"], job["exitCode"], job["verified"]) for job in report["jobs"]
    }
    assert outcome["progress"] == ("completed", 0, True)
    assert outcome["compute"] == ("completed", 0, True)
    assert outcome["3"] == ("failed", 3, False)
    assert outcome["overrun"][0] == "timeout" and outcome["overrun"][2] is False


@pytest.mark.timeout(400)  # about 30 s alone: two registrations, each with a 5 s demo job 5 s after it
def test_the_upstream_demo_rotates_a_spent_token_and_credits_every_job_once(docker_runtime: DockerRuntime) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env["HN_JOB_IMAGE"] = TEST_IMAGE
    done = subprocess.run(
        [sys.executable, "-m", "hypernode_host", "demo", "--upstream", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["leftoverContainers"] == 0
    assert len(report["jobs"]) == 6  # the four examples and upstream's demo job after each of two registers
    assert {job["credits"] for job in report["jobs"]} == {1}
    demo_jobs = [job for job in report["jobs"] if not job["id"].startswith("demo-")]
    assert [job["status"] for job in demo_jobs] == ["completed", "completed"]
