"""A worker asked to stop (Ctrl-C, SIGTERM, a deploy) hands its running job back: no job is lost."""

import os
import signal

import httpx
import redis

from tests.archives import zip_folder
from tests.conftest import REDIS_URL
from tests.factories import build_tiny_model
from tests.integration import harness

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def test_a_stopped_worker_requeues_its_job_for_the_next_worker(database, tmp_path):
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = dict(os.environ)
    port = harness.free_port()
    api = harness.start(harness.compresso("api", "--port", str(port)), env, tmp_path / "api.log")
    first = harness.start(harness.compresso("worker", "--queues", "cpu"), env, tmp_path / "worker-1.log")
    second = None
    base_url = f"http://127.0.0.1:{port}"
    try:
        harness.wait_ready(base_url, api, tmp_path / "api.log")
        with httpx.Client(base_url=base_url, timeout=30) as client:
            model_dir = build_tiny_model("encoder", tmp_path / "encoder")
            model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "m")
            slow = {"latency_repeats": 10_000, "latency_batch_sizes": [32]}
            body = {"model_id": model["id"], "recipe": QUANTIZE, "device": "cpu", "evaluation": slow}
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            assert harness.wait_for_status(client, job_id, ("running",))["attempts"] == 1

            assert harness.stop(first, signal.SIGTERM, timeout=60) == 0
            requeued = client.get(f"/v1/jobs/{job_id}").json()
            assert requeued["status"] == "queued", requeued
            assert requeued["attempts"] == 0  # a clean stop is not the job's fault
            assert requeued["progress"]["stage"] == "requeued: worker stopped"

            second = harness.start(harness.compresso("worker", "--queues", "cpu"), env, tmp_path / "worker-2.log")
            resumed = harness.wait_for_status(client, job_id, ("running",), timeout=120)
            assert resumed["attempts"] == 1
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            assert harness.wait_for_status(client, job_id, harness.FINISHED, timeout=30)["status"] == "cancelled"
    finally:
        for process in (api, first, second):
            if process is not None:
                harness.stop(process)
