"""Job submission through the API: recipe validation, device routing, cancel of a queued job."""

import json

from sqlalchemy import update

from app.db.session import session_scope
from app.jobs.orm import Job
from tests.app.conftest import upload
from tests.rows import add_checkpoint, checkpoint_rows

QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def submit(client, model_id, recipe=QUANTIZE, **extra):
    return client.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe, **extra})


def test_submit_queues_the_job(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit(client, model_id, name="first", device="cpu")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["queue"] == "cpu"
    assert job["progress"] == {
        "stage": None,
        "fraction": 0.0,
        "steps": [{"index": 1, "technique": "quantize", "state": "pending", "wall_time_s": None, "size_bytes_after": None,
                   "resumed_from_attempt": None, "resumed_inside": None}],
    }
    assert job["artifacts"] == []
    assert job["recipe"]["steps"][0]["technique"] == "quantize"
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    assert [j["id"] for j in client.get("/v1/jobs", params={"status": "queued"}).json()["items"]] == [job["id"]]
    assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"] == []


def test_cancel_a_queued_job(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert [step["state"] for step in response.json()["progress"]["steps"]] == ["not run"]
    [line] = client.get(f"/v1/jobs/{job_id}/logs").json()["lines"]
    assert (line["source"], line["message"], line["attempt"]) == ("api", "cancelled before it started", 0)
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}/report").status_code == 409


def test_cancelling_a_requeued_job_removes_its_checkpoints(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    job_id = submit(client, model_id).json()["id"]
    # As after a lost worker: attempt 1 stored a checkpoint, and the job waits for attempt 2.
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(attempts=1))
    stored = add_checkpoint(job_id)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert not stored.exists() and checkpoint_rows(job_id) == 0


def test_a_model_in_use_cannot_be_deleted(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    submit(client, model_id)
    response = client.delete(f"/v1/models/{model_id}")
    assert response.status_code == 409
    assert "cancel them first" in response.json()["detail"]


def test_unknown_technique_names_the_allowed_ones(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit(client, model_id, recipe={"steps": [{"technique": "shrink", "params": {}}]})
    assert response.status_code == 422
    body = response.json()
    error = body["errors"][0]
    assert error["loc"][:5] == ["body", "recipe", "steps", 0, "technique"]
    assert "quantize" in error["allowed"]
    assert "shrink" in body["detail"]


def test_bad_scheme_names_the_field_and_allowed_values(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "quantize", "params": {"scheme": "int3"}}]}
    response = submit(client, model_id, recipe=recipe)
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["loc"] == ["body", "recipe", "steps", 0, "params", "scheme"]
    assert "int8_dynamic" in error["allowed"]


def test_unknown_param_and_empty_recipe_are_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic", "bits": 3}}]}
    response = submit(client, model_id, recipe=recipe)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "bits"
    assert submit(client, model_id, recipe={"steps": []}).status_code == 422
    assert client.get("/v1/jobs").json()["items"] == []


def test_request_shape_errors_are_422_with_the_field(client):
    response = client.post("/v1/jobs", json={"recipe": QUANTIZE})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "model_id"]
    response = client.post("/v1/jobs", json={"model_id": "x", "recipe": QUANTIZE, "device": "tpu"})
    assert response.status_code == 422
    assert "cuda" in str(response.json()["errors"][0]["allowed"])


def test_unknown_model_or_dataset_is_422(client, tiny_encoder_zip):
    assert submit(client, "nope").json()["errors"][0]["loc"] == ["body", "model_id"]
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit(client, model_id, dataset_id="nope")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "dataset_id"]


def test_cuda_without_gpu_workers_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = submit(client, model_id, device="cuda")
    assert response.status_code == 422
    assert "COMPRESSO_GPU_ENABLED" in response.json()["detail"]


def test_cuda_routes_to_the_gpu_queue(client, tiny_encoder_zip):
    from app.config import Settings
    from app.core.deps import settings_dependency

    client.app.dependency_overrides[settings_dependency] = lambda: Settings(gpu_enabled=True, auto_device="cuda")
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    assert submit(client, model_id, device="cuda").json()["queue"] == "gpu"
    assert submit(client, model_id, device="auto").json()["device"] == "cuda"
    assert submit(client, model_id, device="cpu").json()["queue"] == "cpu"


def test_unknown_job_is_404(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.post("/v1/jobs/nope/cancel").status_code == 404


def test_techniques_list_their_param_schemas(client):
    techniques = {t["name"]: t for t in client.get("/v1/techniques").json()}
    schema = techniques["quantize"]["params_schema"]
    assert "scheme" in schema["properties"]
    assert techniques["quantize"]["version"] >= 1


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok" and ready.json()["broker"] == "ok"


def test_dashboard_lists_uploads(client, tiny_encoder_zip):
    upload(client, tiny_encoder_zip, name="shown on the dashboard")
    page = client.get("/")
    assert page.status_code == 200
    assert "shown on the dashboard" in page.text
    assert "BertModel" in page.text


def test_nan_and_infinity_in_a_job_are_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = json.dumps(QUANTIZE)
    for field, value in (('"deployment": {"requests_per_day": NaN}', ["body", "deployment", "requests_per_day"]),
                         ('"evaluation": {"slice_margin": Infinity}', ["body", "evaluation", "slice_margin"]),
                         ('"time_limits": {"soft_seconds": NaN}', ["body", "time_limits", "soft_seconds"])):
        body = f'{{"model_id": "{model_id}", "recipe": {recipe}, {field}}}'
        response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, (field, response.text)
        assert response.json()["errors"][0]["loc"] == value


def test_a_negative_deployment_wue_is_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    response = client.post("/v1/jobs", json={
        "model_id": model_id, "recipe": QUANTIZE, "deployment": {"wue_l_per_kwh": -0.5},
    })
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "deployment", "wue_l_per_kwh"] and "greater than or equal to 0" in error["msg"]


def test_huge_epochs_or_steps_are_refused(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    for params, field in (({"student_depth": 0.5, "epochs": 10**9}, "epochs"),
                          ({"student_depth": 0.5, "max_steps": 10**12}, "max_steps"),
                          ({"structure": "heads", "sparsity": 0.25, "recover": {"epochs": 10**6}}, "recover")):
        technique = "prune" if "structure" in params else "distill"
        response = submit(client, model_id, recipe={"steps": [{"technique": technique, "params": params}]})
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["loc"][:6] == ["body", "recipe", "steps", 0, "params", field]
        assert "less than or equal to" in error["msg"]


def test_a_job_records_its_target_and_defaults_to_onnxruntime_on_the_cpu(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    assert submit(client, model_id).json()["target"] == {"runtime": "onnxruntime", "device": "cpu"}
    bf16 = {"steps": [{"technique": "quantize", "params": {"scheme": "bf16"}}]}
    job = submit(client, model_id, recipe=bf16, target={"runtime": "torch", "device": "cpu"}).json()
    assert job["target"] == {"runtime": "torch", "device": "cpu"}
    assert client.get(f"/v1/jobs/{job['id']}").json()["target"] == job["target"]


def test_a_recipe_that_cannot_build_the_target_is_a_422_naming_the_step(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "cluster", "params": {"bits": 4}}, {"technique": "huffman", "params": {}}]}
    response = submit(client, model_id, recipe=recipe, target={"runtime": "torch", "device": "cpu"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert [error["loc"] for error in body["errors"]] == [
        ["body", "recipe", "steps", 0, "technique"], ["body", "recipe", "steps", 1, "technique"],
    ]
    assert "torch on cpu" in body["detail"] and "use target runtime onnxruntime" in body["detail"]
    fp8 = {"steps": [{"technique": "quantize", "params": {"scheme": "fp8"}}]}
    response = submit(client, model_id, recipe=fp8)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "recipe", "steps", 0, "params", "scheme"]
    response = submit(client, model_id, target={"runtime": "tensorrt"})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "target", "runtime"]


def test_llm_quantize_on_a_model_that_is_not_a_causal_lm_is_a_422(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "llm_quantize", "params": {"scheme": "w4a16"}}]}
    response = submit(client, model_id, recipe=recipe, target={"runtime": "torch", "device": "cpu"})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "recipe", "steps", 0, "technique"] and "feature-extraction" in error["msg"]
    response = submit(client, model_id, recipe=recipe)  # and the default onnxruntime target cannot take it
    assert response.status_code == 422 and "compressed-tensors" in response.json()["detail"]


def test_a_cuda_target_sends_an_auto_job_to_a_gpu_worker(client, tiny_encoder_zip):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    target = {"runtime": "torch", "device": "cuda"}
    refused = submit(client, model_id, target=target)
    assert refused.status_code == 422 and "target device is cuda" in refused.json()["detail"]

    from app.config import Settings
    from app.core.deps import settings_dependency

    client.app.dependency_overrides[settings_dependency] = lambda: Settings(gpu_enabled=True, auto_device="cpu")
    job = submit(client, model_id, target=target).json()
    assert (job["device"], job["queue"]) == ("cuda", "gpu")
    on_cpu = submit(client, model_id, device="cpu", target=target)
    assert on_cpu.status_code == 422 and on_cpu.json()["errors"][0]["loc"] == ["body", "target", "device"]


def test_auto_goes_to_a_gpu_worker_while_one_is_alive(client, tiny_encoder_zip):
    from datetime import timedelta

    from app.config import Settings
    from app.core.deps import settings_dependency
    from app.db.base import utcnow
    from app.db.session import session_scope
    from app.worker_nodes import repository as worker_nodes

    client.app.dependency_overrides[settings_dependency] = lambda: Settings(gpu_enabled=True, auto_device="cpu")
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    assert submit(client, model_id, device="auto").json()["device"] == "cpu"  # no worker has said it is alive
    with session_scope() as session:  # what a gpu worker's heartbeat writes, a while ago: stale
        worker_nodes.beat(session, "gpu0@host", "gpu", "0", utcnow() - timedelta(minutes=10))
    assert submit(client, model_id, device="auto").json()["device"] == "cpu"
    with session_scope() as session:
        worker_nodes.beat(session, "gpu0@host", "gpu", "0", utcnow())
    job = submit(client, model_id, device="auto").json()
    assert (job["device"], job["queue"]) == ("cuda", "gpu")
    assert submit(client, model_id, device="cpu").json()["queue"] == "cpu"  # an explicit device wins


def test_an_executorch_target_is_recorded_and_a_causal_lm_is_refused_for_it(client, tiny_encoder_zip, tmp_path):
    from tests.archives import zip_folder
    from tests.factories import build_tiny_model

    model_id = upload(client, tiny_encoder_zip).json()["id"]
    target = {"runtime": "executorch", "device": "cpu"}
    job = submit(client, model_id, target=target)
    assert job.status_code == 202 and job.json()["target"] == target
    lm_zip = zip_folder(build_tiny_model("causal-lm", tmp_path / "lm"), tmp_path / "lm.zip")
    lm_id = upload(client, lm_zip).json()["id"]
    refused = submit(client, lm_id, target=target)
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "target", "runtime"]
    assert "KV cache" in refused.json()["detail"]


def test_finetune_needs_a_dataset_with_labels(client, tiny_encoder_zip, tmp_path):
    model_id = upload(client, tiny_encoder_zip).json()["id"]
    recipe = {"steps": [{"technique": "finetune", "params": {"epochs": 1}}]}
    response = submit(client, model_id, recipe=recipe)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "dataset_id"] and "no dataset" in response.json()["detail"]

    unlabelled = tmp_path / "texts.jsonl"
    unlabelled.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    dataset_id = upload(client, unlabelled, route="/v1/datasets").json()["id"]
    response = submit(client, model_id, recipe=recipe, dataset_id=dataset_id)
    assert response.status_code == 422 and "no label column" in response.json()["detail"]

    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text('{"text": "one", "label": "a"}\n{"text": "two", "label": "b"}\n', encoding="utf-8")
    dataset_id = upload(client, labelled, route="/v1/datasets").json()["id"]
    assert submit(client, model_id, recipe=recipe, dataset_id=dataset_id).status_code == 202
