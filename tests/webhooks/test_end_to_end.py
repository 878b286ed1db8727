"""Webhooks through real processes on Postgres and Redis: an API, a job worker and a webhook worker.
The receiver refuses the first two requests; every event still arrives, signed, and the deliveries
list says how many tries each took."""

import json
import time

import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness
from tests.webhooks.receiver import Receiver, start_receiver

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
FAST_EVAL = {"max_samples": 16, "sequence_length": 32, "latency_warmup": 1, "latency_repeats": 2,
             "latency_batch_sizes": [1]}


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    env = {"COMPRESSO_WEBHOOKS__RETRY_BASE_SECONDS": "0.5"}
    with harness.distributed_service(tmp_path_factory.mktemp("logs"), ("cpu", "webhooks"), env) as client:
        yield client


def wait_for(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def test_every_event_arrives_signed_despite_two_failures(service, tmp_path):
    client = service
    receiver = Receiver(secret=client.get("/v1/webhooks/secret").json()["secret"], fail_first=2)
    server = start_receiver(receiver)
    try:
        archive = zip_folder(build_tiny_model("encoder", tmp_path / "encoder"), tmp_path / "encoder.zip")
        model = harness.upload(client, "/v1/models", archive, "hooked")
        submitted = client.post("/v1/jobs", json={
            "model_id": model["id"], "recipe": QUANTIZE, "device": "cpu", "evaluation": FAST_EVAL,
            "webhook_url": receiver.url,
        })
        assert submitted.status_code == 202, submitted.text
        job = harness.wait_for_status(client, submitted.json()["id"], harness.FINISHED)
        assert job["status"] == "succeeded", job

        expected = {"job.queued", "job.running", "job.succeeded"}
        received = wait_for(lambda: receiver.accepted() if {r.event for r in receiver.accepted()} >= expected else None)
        assert all(r.signature_valid for r in received)
        bodies = sorted((json.loads(r.body) for r in received), key=lambda body: body["created_at"])
        assert [body["event"] for body in bodies] == ["job.queued", "job.running", "job.succeeded"]
        assert bodies[-1]["job"]["status"] == "succeeded" and bodies[-1]["job"]["artifacts"]
        assert len({r.delivery for r in received}) == 3  # each event once, however many tries

        def all_delivered():
            items = client.get("/v1/webhooks/deliveries", params={"job_id": job["id"]}).json()["items"]
            return items if len(items) == 3 and all(d["status"] == "delivered" for d in items) else None

        deliveries = wait_for(all_delivered)
        tries = {d["event"]: d["attempts"] for d in deliveries}
        assert sum(tries.values()) == 5 and receiver.requests == 5  # 2 refused + 3 accepted
        assert max(tries.values()) >= 2
    finally:
        server.shutdown()
