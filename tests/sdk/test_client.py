"""The SDK against a real `compresso serve`: upload, submit, wait, report, download and logs; refusals
as typed errors; a reused Idempotency-Key creates nothing twice."""

import hashlib
import json
import uuid
import zipfile

import pytest

from compresso import Client, Conflict, InvalidRequest, Job, NotFound
from tests.sdk.conftest import FAST_EVALUATION, QUANTIZE


def test_upload_submit_wait_report_download_and_logs(server_url, model_folder, dataset_file, recipe_file, tmp_path):
    sent, received, polled = [], [], []
    with Client(server_url) as client:
        model = client.upload_model(model_folder, on_progress=lambda done, total: sent.append((done, total)))
        assert (model.name, model.architecture, model.status) == ("tiny-encoder", "BertModel", "ready")
        assert sent[-1][0] == sent[-1][1] > 0
        assert client.model(model.id) == model and model.created_at.tzinfo is not None
        assert model.id in {m.id for m in client.models()}

        dataset = client.upload_dataset(dataset_file)
        assert (dataset.name, dataset.num_rows) == ("sentences", 24) and "slice" in dataset.columns

        job = client.submit(
            model.id, recipe_file, dataset_id=dataset.id, name="sdk-flow", device="cpu", evaluation=FAST_EVALUATION
        )
        assert job.status == "queued" and job.recipe["steps"][0]["technique"] == "quantize"
        done = client.wait(job.id, timeout=120, poll_seconds=0.2, on_progress=polled.append)
        assert done.status == "succeeded" and done.fraction == 1.0
        assert [(s.technique, s.state) for s in done.steps] == [("quantize", "done")]
        assert all(isinstance(j, Job) for j in polled) and polled[-1] == done
        assert job.id in {j.id for j in client.jobs(status="succeeded")}

        report = client.report(job.id)
        assert report["schema_version"] == 1

        path = client.download(job.id, tmp_path, on_progress=lambda done, total: received.append((done, total)))
        assert path == tmp_path / "model.zip" and list(tmp_path.iterdir()) == [path]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == done.artifact("model").sha256
        assert received[-1] == (path.stat().st_size, path.stat().st_size)
        with zipfile.ZipFile(path) as archive:
            assert "model.onnx" in archive.namelist()
        report_path = client.download(job.id, tmp_path / "report.json", kind="report")
        assert json.loads(report_path.read_text())["schema_version"] == 1

        lines = client.logs(job.id)
        assert lines[-1]["source"] == "worker" and "succeeded" in lines[-1]["message"]
        assert client.logs(job.id, after=lines[-1]["id"]) == []


def test_refusals_are_typed_problem_details(server_url, model_id):
    with Client(server_url) as client:
        with pytest.raises(NotFound) as caught:
            client.model("no-such-model")
        assert (caught.value.status, caught.value.type) == (404, "/problems/not-found")

        bad = {"steps": [{"technique": "quantize", "params": {"scheme": "int3"}}]}
        with pytest.raises(InvalidRequest) as caught:
            client.submit(model_id, bad)
        field = caught.value.errors[0]
        assert field["loc"][-1] == "scheme" and "int8_dynamic" in field["allowed"]

        job = client.submit(model_id, QUANTIZE)
        client.cancel(job.id)
        with pytest.raises(Conflict):
            client.report(job.id)

        [first, *_] = client.presets()
        job = client.submit(model_id, preset=first["name"])
        assert job.preset == first["name"] and job.recipe == first["recipe"]
        client.cancel(job.id)

        goal = {"min_fidelity": 0.99, "objective": "smallest", "budget_minutes": 20}
        job = client.submit(model_id, goal=goal)
        assert job.goal["min_fidelity"] == 0.99 and job.recipe == {"steps": []}
        assert 0 < job.preflight["expected_seconds"] <= 1200
        client.cancel(job.id)


def test_a_reused_idempotency_key_returns_the_first_result(server_url, model_folder, dataset_file):
    key = str(uuid.uuid4())
    with Client(server_url) as client:
        # The folder is zipped again for the second call: the same bytes, so the server sees the same request.
        first_model = client.upload_model(model_folder, "idempotent", idempotency_key=key)
        assert client.upload_model(model_folder, "idempotent", idempotency_key=key).id == first_model.id
        first_dataset = client.upload_dataset(dataset_file, idempotency_key=key)
        assert client.upload_dataset(dataset_file, idempotency_key=key).id == first_dataset.id

        first = client.submit(first_model.id, QUANTIZE, idempotency_key=key)
        again = client.submit(first_model.id, QUANTIZE, idempotency_key=key)
        assert again.id == first.id
        assert [j.id for j in client.jobs()].count(first.id) == 1
        with pytest.raises(InvalidRequest) as caught:  # the same key for another request
            client.submit(first_model.id, QUANTIZE, name="another", idempotency_key=key)
        assert caught.value.type == "/problems/idempotency-key-reused"
        client.cancel(first.id)


def test_suggest_label_then_finetune_the_new_version(server_url, model_id, dataset_file):
    """Active learning for the user's labels, end to end with the real worker: ask which rows to label, label
    them into a new dataset version, then fine-tune a classifier on that version and compress it."""
    truth = [json.loads(line)["slice"] for line in dataset_file.read_text().splitlines()]
    with Client(server_url) as client:
        dataset = client.upload_dataset(dataset_file, "to-label")
        assert (dataset.version, dataset.lineage_id, dataset.num_labelled) == (1, dataset.id, 0)
        suggestion = client.suggest_labels(dataset.id, model_id, n=8, poll_seconds=0.2)
        assert suggestion["status"] == "succeeded", suggestion
        assert suggestion["method"] == "diversity" and len(suggestion["rows"]) == 8
        rows = [item["row"] for item in suggestion["rows"]]
        labelled = client.label_rows(dataset.id, {row: truth[row] for row in rows})
        assert (labelled.version, labelled.parent_id, labelled.num_labelled) == (2, dataset.id, 8)
        assert [item.version for item in client.dataset_versions(dataset.id)] == [1, 2]
        with pytest.raises(InvalidRequest):
            client.label_rows(dataset.id, {99: "news"})

        recipe = {"steps": [
            {"technique": "finetune", "params": {"lr": 3e-3, "epochs": 4, "batch_size": 4, "heldout_fraction": 0.25}},
            {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
        ]}
        # Every row: a job reads the first max_samples rows, and the finetune trains on those.
        evaluation = {**FAST_EVALUATION, "max_samples": 24}
        job = client.submit(model_id, recipe, dataset_id=labelled.id, device="cpu", evaluation=evaluation)
        done = client.wait(job.id, timeout=300, poll_seconds=0.2)
        assert done.dataset_id == labelled.id  # the job records the version it used
        report = client.report(job.id)
    assert report["model"]["task"] == "text-classification" and report["fidelity"]["reference"] == "step 1 (finetune)"
    finetune = report["steps"][0]["details"]
    assert (finetune["labelled_rows"], finetune["heldout_rows"], finetune["training_rows"]) == (8, 2, 6)
    assert sorted(finetune["classes"]) == sorted({truth[row] for row in rows})
