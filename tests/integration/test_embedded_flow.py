"""The embedded default, started with the README's run command: SQLite, local files, one worker process.

Ctrl-C must stop the API and the worker it started.
"""

import json
import os
import signal
import sqlite3
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


@pytest.fixture
def embedded(tmp_path):
    data_dir = tmp_path / "data"
    port = harness.free_port()
    log = tmp_path / "serve.log"
    process = harness.start(["make", "--no-print-directory", "run"], harness.embedded_env(data_dir, port), log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        harness.wait_ready(base_url, process, log, timeout=300)
        yield base_url, data_dir, process, log
    finally:
        harness.stop(process, signal.SIGKILL)
        for pid in harness.processes_using(data_dir):
            os.kill(pid, signal.SIGKILL)


def test_embedded_default_end_to_end_and_ctrl_c(embedded, tmp_path):
    base_url, data_dir, process, log = embedded
    assert (data_dir / "compresso.db").is_file()
    with sqlite3.connect(data_dir / "compresso.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"models", "datasets", "jobs", "artifacts", "alembic_version"} <= tables

    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/").status_code == 200
        model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "tiny")
        submitted = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": QUANTIZE})
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["status"] == "queued"  # the API answered before the job ran
        job = harness.wait_for_status(client, submitted.json()["id"], harness.FINISHED)
        assert job["status"] == "succeeded", (job, log.read_text()[-4000:])
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["evaluation"]["dataset_source"] == "builtin"
        model_artifact = next(a for a in job["artifacts"] if a["kind"] == "model")
        archive = harness.download(client, model_artifact, tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as zipped:
        assert "model.onnx" in zipped.namelist()
        assert json.loads(zipped.read("report.json"))["fidelity"] == report["fidelity"]
    assert (data_dir / "storage").is_dir()

    # Ctrl-C: the terminal signals the foreground process group.
    assert len(harness.processes_using(data_dir)) >= 2
    os.killpg(process.pid, signal.SIGINT)
    process.wait(60)
    deadline = time.monotonic() + 60
    while harness.processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert harness.processes_using(data_dir) == [], log.read_text()[-4000:]


def test_serve_keeps_torch_out_of_the_api_process(tmp_path):
    """`serve` asks a child process whether CUDA exists, so the API process it becomes never loads torch
    (about 230 MB resident for its whole life); only the workers, which run models, do."""
    with harness.embedded_server(tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "python" in maps  # the right process, still alive when read
    assert "libtorch" not in maps
