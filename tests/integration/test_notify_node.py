"""A whole node (`up`) with receivers that are down and slow: jobs run and their results reach the backend
as usual meanwhile, and the receiver that answers hears the node register and each job finish."""

from __future__ import annotations

import uuid

from hypernode_host.tasks.containers import DockerRuntime
from receivers import Receiver, down_url
from support import NodeProcess, node_stack, wait_for


def test_a_down_and_a_slow_receiver_never_hold_up_a_job(docker_runtime: DockerRuntime) -> None:
    with Receiver(hold=True) as slow, Receiver() as ok:
        urls = ",".join([down_url(), slow.url, ok.url])
        with (
            node_stack(HN_CPU_SLOTS="1", HN_JOB_TIMEOUT="60", HN_NOTIFY_URL=urls) as (_, backend, env),
            NodeProcess(env) as node,
        ):
            backend.wait_for_node(timeout=30)
            wait_for(lambda: slow.waiting == 1, timeout=30)  # node.registered, held by the slow receiver
            ids = [f"n-{uuid.uuid4().hex[:10]}" for _ in range(2)]
            for job_id in ids:
                backend.send_job({"id": job_id, "command": "echo ok", "memoryLimit": "128m", "cpuLimit": 0.5})
            results = [backend.wait_for_result(job_id, 60) for job_id in ids]
            # Both results reached the backend while the slow receiver still held its first request.
            assert slow.received == [] and slow.waiting >= 1
            assert [r["status"] for r in results] == ["completed", "completed"]
            wait_for(lambda: ok.events().count("job.finished") == 2, timeout=30)
            assert "node.registered" in ok.events()
            finished = [r.json() for r in ok.received if r.json()["event"] == "job.finished"]
            assert sorted(d["job_id"] for d in finished) == sorted(ids)
            assert {d["status"] for d in finished} == {"completed"} and all(d["duration_s"] >= 0 for d in finished)
            slow.release()
            assert node.stop() == 0, node.output()[-3000:]
