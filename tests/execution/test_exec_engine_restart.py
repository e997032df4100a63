"""The Docker engine restarting mid-job (an apt upgrade does this), on an engine of the test's own.

The job ends with exactly one result, `error` with reason engine_restarted (no live-restore: the engine
stops its containers as it stops); the worker lives through the engine's absence, says so in its
registration and serves again once the engine is back; nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from privatedocker import PrivateDockerd

from hypernode_host.state import keys
from support import NodeProcess, node_stack, wait_for

pytestmark = pytest.mark.timeout(600)  # an engine started twice and the job image copied into it


@pytest.fixture(scope="module")
def engine() -> Iterator[PrivateDockerd]:
    dockerd = PrivateDockerd()
    try:
        dockerd.start()
        dockerd.load_image()
        yield dockerd
    finally:
        dockerd.close()


def test_an_engine_restart_mid_job_ends_it_with_one_error_and_the_worker_serves_again(engine: PrivateDockerd) -> None:
    script = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"
    with node_stack(HN_CPU_SLOTS="1", DOCKER_HOST=engine.url) as (redis_server, backend, env):
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        worker_key = keys.WORKER.format(host=env["HN_NODE_NAME"], slot=0)
        with NodeProcess(env) as node:
            wait_for(lambda: client.hget(worker_key, "healthy") == "1", timeout=120)
            pid = client.hget(worker_key, "pid")
            job_id = backend.send_job({"id": "engine-1", "script": script, "memoryLimit": "128m", "cpuLimit": 0.5})
            wait_for(lambda: "started" in engine.docker("logs", f"hn-job-{job_id}", check=False), timeout=120)

            engine.stop()
            wait_for(lambda: client.hget(worker_key, "health") == "the Docker engine does not answer", timeout=60)
            assert client.hget(worker_key, "healthy") == "0" and client.hget(worker_key, "pid") == pid  # no restart
            engine.start()

            try:
                result = backend.wait_for_result(job_id, 180)
            except TimeoutError:
                raise AssertionError(f"no result: {node.output()[-4000:]}\n{engine.log()}") from None
            assert (result["status"], result["reason"]) == ("error", "engine_restarted"), node.output()[-3000:]
            assert result["logs"] == "the Docker engine restarted"
            wait_for(lambda: client.hget(worker_key, "healthy") == "1", timeout=60)
            assert client.hget(worker_key, "pid") == pid  # the same worker, serving again
            again = backend.send_job({"id": "engine-2", "script": "print('back')", "memoryLimit": "128m"})
            after = backend.wait_for_result(again, 120)
            assert (after["status"], after["logs"]) == ("completed", "back\n"), node.output()[-3000:]
            wait_for(lambda: client.xlen(keys.REPLY_STREAM) == 0, timeout=60)
            assert len(backend.results(job_id)) == 1
            assert engine.docker("ps", "-aq", "--filter", f"label=hypernode.node={env['HN_NODE_NAME']}").split() == []
        client.close()
