"""The whole path on Postgres + Redis: a real API process and a real Celery worker process.

Upload, submit, poll, download; then an independent check of the artifact that does not import
compresso must agree with the report's fidelity.
"""

import json
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    """An API and a cpu worker, as separate processes sharing Postgres, Redis and the artifact dir."""
    logs = tmp_path_factory.mktemp("logs")
    with harness.distributed_service(logs) as client:
        yield client, logs


@pytest.fixture(scope="module")
def eval_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "eval.jsonl"
    rows = [
        {"text": f"sample sentence number {i} about {topic}", "label": i % 2, "slice": topic}
        for i, topic in enumerate(["weather", "sports", "finance", "travel"] * 10)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def independent_fidelity(artifact_dir: Path, original_dir: Path, dataset: Path, report: dict) -> dict:
    evaluation = report["evaluation"]
    command = [
        sys.executable,
        str(HERE / "independent_check.py"),
        str(artifact_dir),
        str(original_dir),
        str(dataset),
        report["model"]["task"],
        str(evaluation["sequence_length"]),
        str(evaluation["batch_size"]),
        str(evaluation["num_samples"]),
    ]
    # Run from outside the repository so nothing of compresso is importable by accident.
    result = subprocess.run(command, capture_output=True, text=True, cwd=artifact_dir, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured.pop("compresso_modules_imported") == []
    return measured


def run_job_to_completion(client, model_dir: Path, kind: str, dataset: Path, tmp_path: Path) -> tuple[dict, dict, Path]:
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / f"{kind}.zip"), kind)
    data = harness.upload(client, "/v1/datasets", dataset, "eval")
    response = client.post(
        "/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "recipe": QUANTIZE, "device": "cpu"}
    )
    assert response.status_code == 202, response.text
    job = harness.wait_for_status(client, response.json()["id"], harness.FINISHED)
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    kinds = {artifact["kind"]: artifact for artifact in job["artifacts"]}
    assert set(kinds) == {"model", "report"}
    archive = harness.download(client, kinds["model"], tmp_path / "model.zip")
    artifact_dir = tmp_path / "artifact"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(artifact_dir)
    return job, report, artifact_dir


def log_messages(client, job_id: str) -> list[tuple[str, str]]:
    """The whole job log, read a page at a time through the `after` cursor."""
    lines, after = [], 0
    while True:
        page = client.get(f"/v1/jobs/{job_id}/logs", params={"after": after, "limit": 5}).json()
        if not page["lines"]:
            return lines
        assert [line["id"] for line in page["lines"]] == sorted(line["id"] for line in page["lines"])
        assert all(line["id"] > after for line in page["lines"])
        lines += [(line["source"], line["message"]) for line in page["lines"]]
        after = page["next_after"]


def test_encoder_job_end_to_end(service, eval_dataset, tmp_path):
    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder", hidden_size=128)
    job, report, artifact_dir = run_job_to_completion(client, model_dir, "encoder", eval_dataset, tmp_path)

    assert job["progress"]["fraction"] == 1.0
    assert job["progress"]["steps"] == [{
        "index": 1, "technique": "quantize", "state": "done",
        "wall_time_s": report["steps"][0]["wall_time_s"], "size_bytes_after": report["steps"][0]["size_bytes_after"],
        "resumed_from_attempt": None, "resumed_inside": None,  # the first attempt ran it
    }]
    log = log_messages(client, job["id"])
    assert log[0][0] == "worker" and "attempt 1 started" in log[0][1]
    assert any(source == "engine" and "step 1/1: quantize" in message for source, message in log)
    assert log[-1] == ("worker", "succeeded: the model and report are stored")
    assert (artifact_dir / "model.onnx").is_file()
    assert (artifact_dir / "tokenizer.json").is_file() or (artifact_dir / "vocab.txt").is_file()
    assert json.loads((artifact_dir / "report.json").read_text())["fidelity"] == report["fidelity"]
    runtimes = {entry["path"]: entry["runtime"] for entry in report["files"]}
    assert runtimes["model.onnx"] == "onnxruntime"
    assert report["result"]["size_bytes"] < report["original"]["size_bytes"]

    measured = independent_fidelity(artifact_dir, model_dir, eval_dataset, report)
    assert measured["mean_cosine"] == pytest.approx(report["fidelity"]["metrics"]["cosine_mean"], abs=1e-4)
    assert measured["p5_cosine"] == pytest.approx(report["fidelity"]["metrics"]["cosine_p5"], abs=1e-4)


def test_classifier_job_reports_accuracy_and_agreement(service, eval_dataset, tmp_path):
    client, _logs = service
    model_dir = build_tiny_model("classifier", tmp_path / "classifier")
    job, report, artifact_dir = run_job_to_completion(client, model_dir, "classifier", eval_dataset, tmp_path)

    for side in ("original", "result"):
        quality = report[side]["quality"]
        assert 0.0 <= quality["accuracy"] <= 1.0
        assert 0.0 <= quality["macro_f1"] <= 1.0
    measured = independent_fidelity(artifact_dir, model_dir, eval_dataset, report)
    assert measured["top1_agreement"] == pytest.approx(report["fidelity"]["metrics"]["top1_agreement"], abs=1e-6)
    assert measured["mean_kl"] == pytest.approx(report["fidelity"]["metrics"]["kl_mean"], abs=1e-4)


def test_redelivered_message_adds_nothing(service, eval_dataset, tmp_path):
    """A finished job's message delivered again (acks_late) is skipped: no second artifact."""
    from workers.tasks.run_job import execute_job

    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    job, _report, _dir = run_job_to_completion(client, model_dir, "encoder", eval_dataset, tmp_path)
    assert execute_job(job["id"]) == "skipped"
    again = client.get(f"/v1/jobs/{job['id']}").json()
    assert again["status"] == "succeeded"
    assert [a["id"] for a in again["artifacts"]] == [a["id"] for a in job["artifacts"]]


def test_cancel_running_and_queued_jobs(service, tmp_path):
    """A running job stops within seconds and leaves no files; a queued one never starts."""
    import time

    from app.config import get_settings

    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "slow")
    # Enough timed latency runs to keep the job busy far longer than the test waits.
    slow = {"latency_repeats": 10_000, "latency_batch_sizes": [32]}
    body = {"model_id": model["id"], "recipe": QUANTIZE, "device": "cpu", "evaluation": slow}
    running_id = client.post("/v1/jobs", json=body).json()["id"]
    queued_id = client.post("/v1/jobs", json=body).json()["id"]  # the worker runs one job at a time

    running = harness.wait_for_status(client, running_id, ("running",))
    assert running["started_at"] is not None
    time.sleep(2)  # let the engine get going
    assert client.get(f"/v1/jobs/{queued_id}").json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{queued_id}/cancel").json()["status"] == "cancelled"

    asked = time.monotonic()
    response = client.post(f"/v1/jobs/{running_id}/cancel")
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    cancelled = harness.wait_for_status(client, running_id, ("cancelled", "succeeded", "failed"), timeout=30)
    assert cancelled["status"] == "cancelled"
    assert time.monotonic() - asked < 10
    # The slow evaluation of the original is where it stopped: before the quantize step ran.
    assert cancelled["progress"]["steps"][0]["state"] == "not run"
    assert log_messages(client, running_id)[-1][1].startswith("cancelled on request")
    assert cancelled["artifacts"] == []
    assert not (get_settings().storage_dir / "jobs" / running_id).exists()

    time.sleep(3)  # the cancelled queued job's message reaches the worker, which must skip it
    never_started = client.get(f"/v1/jobs/{queued_id}").json()
    assert never_started["status"] == "cancelled"
    assert never_started["started_at"] is None
    assert never_started["attempts"] == 0


def test_a_failed_job_says_why_and_leaves_nothing(service, tmp_path):
    """Labels the classifier does not know make the engine refuse the job: failed, with the reason."""
    from app.config import get_settings

    client, _logs = service
    model_dir = build_tiny_model("classifier", tmp_path / "classifier")
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "classifier")
    dataset_path = tmp_path / "bad-labels.jsonl"
    dataset_path.write_text("".join(json.dumps({"text": f"row {i}", "label": "maybe"}) + "\n" for i in range(4)))
    dataset = harness.upload(client, "/v1/datasets", dataset_path, "bad labels")
    body = {"model_id": model["id"], "dataset_id": dataset["id"], "recipe": QUANTIZE, "device": "cpu"}
    job = harness.wait_for_status(client, client.post("/v1/jobs", json=body).json()["id"], harness.FINISHED)
    assert job["status"] == "failed"
    assert "maybe" in job["error"]
    assert log_messages(client, job["id"])[-1] == ("worker", f"failed: {job['error']}")
    assert job["artifacts"] == []
    assert not (get_settings().storage_dir / "jobs" / job["id"]).exists()
    assert client.get(f"/v1/jobs/{job['id']}/report").status_code == 409


def test_sustainability_report_end_to_end(service, eval_dataset, tmp_path):
    """Energy per stage stored as rows, payback at the stated rate, slices, model card, summary, metrics."""
    import yaml

    client, _logs = service
    model_dir = build_tiny_model("classifier", tmp_path / "classifier", hidden_size=64)
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "classifier")
    dataset = harness.upload(client, "/v1/datasets", eval_dataset, "eval")
    body = {
        "model_id": model["id"], "dataset_id": dataset["id"], "recipe": QUANTIZE, "device": "cpu",
        "deployment": {"country": "DEU", "requests_per_day": 1_000_000, "wue_l_per_kwh": 0.2},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = harness.wait_for_status(client, response.json()["id"], harness.FINISHED)
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    water, embodied = report["water"], report["embodied"]

    energy = report["energy"]
    assert energy["method"] == "estimated"
    stages = energy["stages"]
    assert sum(s["energy_kwh"] for s in stages) == pytest.approx(energy["total"]["energy_kwh"])
    assert report["payback"]["deployment"]["country"] == "DEU"
    assert report["payback"]["deployment"]["requests_per_day"] == 1_000_000
    assert report["slices"]["source"] == "slice"
    assert {s["name"] for s in report["slices"]["slices"]} == {"weather", "sports", "finance", "travel"}

    # Water and embodied impact, with their methods, stage by stage like the energy.
    assert [s["stage"] for s in water["stages"]] == [s["stage"] for s in stages] == [s["stage"] for s in embodied["stages"]]
    assert water["total"]["water_l"] == pytest.approx(sum(s["water_l"] for s in water["stages"])) and water["total"]["water_l"] > 0
    assert water["worker"]["wue_l_per_kwh"] == 1.8 and "Shehabi" in water["worker"]["wue_source"]
    assert water["inference"]["deployment"]["wue_l_per_kwh"] == 0.2
    assert water["inference"]["deployment"]["country"] == "DEU" and "Li et al." in water["formula"]
    assert embodied["method"] == "estimated", embodied["error"]
    assert embodied["total"]["gwp_g"] == pytest.approx(sum(s["gwp_g"] for s in embodied["stages"]))
    assert embodied["total"]["gwp_g"] > 0
    assert embodied["inputs"]["tool"] == "boaviztapi" and {"cpu", "ram"} <= {
        c["component"] for c in embodied["inputs"]["components"]
    }
    for unit in (water, embodied):
        assert unit["payback"]["verdict"] in ("saves", "costs more", "no measurable saving")

    summary = client.get("/v1/reports/summary").json()
    mine = next(row for row in summary["jobs"] if row["id"] == job["id"])
    assert mine["energy_kwh"] == pytest.approx(energy["total"]["energy_kwh"])
    assert mine["co2e_g"] == pytest.approx(energy["total"]["co2e_g"])
    assert mine["water_l"] == pytest.approx(water["total"]["water_l"])
    assert mine["embodied_gco2e"] == pytest.approx(embodied["total"]["gwp_g"])
    assert mine["water_verdict"] == water["payback"]["verdict"]
    # The worker added the job to its tenant's running totals, which the dashboard overview reads.
    overview = client.get("/").text
    assert int(overview.split('id="total-compressed">', 1)[1].split("<", 1)[0]) >= 1
    metrics = client.get("/metrics").text
    assert 'compresso_jobs{status="succeeded"}' in metrics
    assert 'compresso_job_water_litres_total{site="onsite"}' in metrics and "compresso_job_embodied_gco2e_total" in metrics

    artifact = next(a for a in job["artifacts"] if a["kind"] == "model")
    with zipfile.ZipFile(harness.download(client, artifact, tmp_path / "model.zip")) as zipped:
        card = zipped.read("README.md").decode()
    front_matter = yaml.safe_load(card.split("---")[1])
    emissions = front_matter["co2_eq_emissions"]
    assert set(emissions) >= {"emissions", "source", "training_type", "geographical_location", "hardware_used"}
    assert emissions["emissions"] == pytest.approx(energy["total"]["co2e_g"])
    assert dataset["sha256"] in card
    assert "## Water and embodied impact" in card and "boaviztapi" in card


def test_unknown_deployment_country_is_422(service, tmp_path):
    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "m.zip"), "m")
    body = {"model_id": model["id"], "recipe": QUANTIZE, "deployment": {"country": "XYZ"}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert "XYZ" in response.json()["detail"]


CHAINED = {"steps": [
    {"technique": "distill", "params": {"student_depth": 0.5, "max_steps": 4, "batch_size": 8}},
    {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.3,
                                      "recover": {"max_steps": 2, "batch_size": 8}}},
    {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
    {"technique": "huffman", "params": {"min_elements": 1024}},
]}


def test_a_chained_recipe_end_to_end(service, eval_dataset, tmp_path):
    """distill -> prune (recovered) -> quantize -> huffman through the API and a real worker; what is
    downloaded unpacks, outside compresso's engine, into a folder onnxruntime runs."""
    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder", hidden_size=128)
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "encoder")
    data = harness.upload(client, "/v1/datasets", eval_dataset, "eval")
    response = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "recipe": CHAINED})
    assert response.status_code == 202, response.text
    job = harness.wait_for_status(client, response.json()["id"], harness.FINISHED, timeout=300)
    assert job["status"] == "succeeded", job
    assert [step["state"] for step in job["progress"]["steps"]] == ["done"] * 4

    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    steps = report["steps"]
    assert [step["format_after"] for step in steps] == ["torch", "torch", "onnx", "packed"]
    assert steps[0]["details"]["student_layers"] and steps[0]["parameters_after"] < steps[0]["parameters_before"]
    assert steps[1]["details"]["recovery"]["steps"] == 2
    assert steps[3]["details"]["entropy_bits_per_weight"] <= steps[3]["details"]["bits_per_weight"]
    assert report["result"]["format"] == "cpz" and report["result"]["size_bytes"] < report["original"]["size_bytes"]

    kinds = {artifact["kind"]: artifact for artifact in job["artifacts"]}
    archive = harness.download(client, kinds["model"], tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "package")
    runnable = tmp_path / "runnable"
    subprocess.run([str(Path(sys.executable).with_name("compresso")), "unpack", str(tmp_path / "package" / "model.cpz"),
                    str(runnable)], check=True, capture_output=True)
    measured = independent_fidelity(runnable, model_dir, eval_dataset, report)
    assert measured["mean_cosine"] == pytest.approx(report["fidelity"]["metrics"]["cosine_mean"], abs=1e-4)


def test_a_student_must_be_an_uploaded_model(service, tmp_path):
    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "encoder")
    recipe = {"steps": [{"technique": "distill", "params": {"student_model_id": "no-such-model"}}]}
    response = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": recipe})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "recipe", "steps", 0, "params", "student_model_id"]
    assert "upload it first" in error["msg"]


def test_each_worker_node_records_that_it_is_alive(service):
    from app.db.base import utcnow
    from app.db.session import session_scope
    from app.worker_nodes import repository as worker_nodes

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with session_scope() as session:
            nodes = {node.name: node.queues for node in worker_nodes.alive(session, utcnow() - timedelta(minutes=1))}
        if "cpu" in nodes.values():
            break
        time.sleep(0.5)
    assert "cpu" in nodes.values(), nodes
    assert all("@" in name for name in nodes)


def test_a_torch_target_job_through_the_api_and_a_worker(service, eval_dataset, tmp_path):
    """The target travels from the request through the database to the engine, and a stored recipe
    (every param with its default) validates again there, whatever the scheme."""
    from transformers import AutoModel

    client, _logs = service
    model_dir = build_tiny_model("encoder", tmp_path / "encoder", hidden_size=64)
    model = harness.upload(client, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "encoder")
    recipe = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_weight_only"}}]}
    response = client.post("/v1/jobs", json={
        "model_id": model["id"], "recipe": recipe, "device": "cpu", "target": {"runtime": "torch", "device": "cpu"},
    })
    assert response.status_code == 202, response.text
    job = harness.wait_for_status(client, response.json()["id"], harness.FINISHED)
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["job"]["target"] == {"runtime": "torch", "device": "cpu"}
    assert (report["result"]["format"], report["result"]["runtime"]) == ("safetensors", "pytorch")
    [artifact] = [item for item in job["artifacts"] if item["kind"] == "model"]
    with zipfile.ZipFile(harness.download(client, artifact, tmp_path / "model.zip")) as archive:
        archive.extractall(tmp_path / "artifact")
    reloaded = AutoModel.from_pretrained(tmp_path / "artifact")
    assert type(reloaded.encoder.layer[0].output.dense.weight).__name__ == "Int8Tensor"
