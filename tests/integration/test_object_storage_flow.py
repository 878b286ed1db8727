"""No shared disk: an API and two workers, each with its own data dir, share only Postgres, Redis and an
S3-compatible bucket (a real moto server process). Uploads, three jobs and the downloads all work, and
every stored object is in the bucket."""

import hashlib
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness
from tests.s3_server import AWS_ENV, s3_server

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
BUCKET = "compresso-flow"


def _files(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def test_api_and_two_workers_share_nothing_but_the_bucket(database, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    with s3_server(harness.free_port(), logs / "moto.log") as server:
        server.client().create_bucket(Bucket=BUCKET)
        common = {
            **os.environ, **AWS_ENV, "COMPRESSO_STORAGE_URL": f"s3://{BUCKET}/service",
            "COMPRESSO_S3_ENDPOINT_URL": server.endpoint_url, "COMPRESSO_STORAGE_PRESIGN": "true",
        }
        homes = {name: tmp_path / name for name in ("api", "worker-1", "worker-2")}
        processes = [
            harness.start(harness.compresso("worker", "--queues", "cpu"), {**common, "COMPRESSO_DATA_DIR": str(homes[name])},
                          logs / f"{name}.log")
            for name in ("worker-1", "worker-2")
        ]
        port = harness.free_port()
        api = harness.start(harness.compresso("api", "--port", str(port)),
                            {**common, "COMPRESSO_DATA_DIR": str(homes["api"])}, logs / "api.log")
        processes.append(api)
        base_url = f"http://127.0.0.1:{port}"
        try:
            harness.wait_ready(base_url, api, logs / "api.log")
            with httpx.Client(base_url=base_url, timeout=60) as client:
                model_dir = build_tiny_model("encoder", tmp_path / "encoder")
                model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "tiny")
                ids = []
                for _ in range(3):
                    response = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": QUANTIZE})
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])
                jobs = [harness.wait_for_status(client, job_id, harness.FINISHED, timeout=300) for job_id in ids]
                assert all(job["status"] == "succeeded" for job in jobs), (jobs, (logs / "worker-1.log").read_text()[-3000:])

                keys = server.keys(BUCKET)
                assert f"service/models/{model['id']}/.compresso-folder.json" in keys
                for job in jobs:
                    for artifact in job["artifacts"]:
                        assert f"service/jobs/{job['id']}/{artifact['filename']}" in keys
                        # Presigned: the API answers 307 and the bucket serves the bytes.
                        redirect = client.get(f"/v1/artifacts/{artifact['id']}", follow_redirects=False)
                        assert redirect.status_code == 307, redirect.text
                        body = httpx.get(redirect.headers["location"]).content
                        assert hashlib.sha256(body).hexdigest() == artifact["sha256"] == redirect.headers["x-content-sha256"]
                # The workers read the model from the bucket into their own local caches.
                cached = [name for name in ("worker-1", "worker-2") if any(homes[name].glob("object-storage/cache/*"))]
                assert cached, "no worker has a local copy of the model"
        finally:
            for process in reversed(processes):
                harness.stop(process, signal.SIGTERM)

    # Nothing stored outside the bucket: the API keeps no model, dataset or artifact on its disk, and the
    # workers keep only their cache.
    assert not (homes["api"] / "storage").exists()
    assert not any(path.startswith(("models/", "jobs/")) for path in _files(homes["api"] / "object-storage"))
    for name in ("worker-1", "worker-2"):
        local = _files(homes[name] / "object-storage") if (homes[name] / "object-storage").exists() else set()
        assert all(path.startswith("cache/") for path in local), local


@pytest.mark.parametrize("url", ["http://not-a-bucket", "s3://"])
def test_a_bad_storage_url_stops_a_worker_at_start(url):
    from tests.app.test_cli import run_cli

    result = run_cli("worker", COMPRESSO_STORAGE_URL=url)
    assert result.returncode != 0 and "COMPRESSO_STORAGE_URL" in result.stderr
