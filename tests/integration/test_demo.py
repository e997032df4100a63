"""`hypernode-host demo --json`: the main job on embedded defaults exits 0 with the four expected results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
