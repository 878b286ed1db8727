"""A finished job logs an MLflow run on a real tracking store (SQLite), read back with MLflow's own
client: the recipe as params, the report's figures as metrics, the package and the report as
artifacts, and the model registered under the job's name, loadable with mlflow.pyfunc."""

import zipfile

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from tests.app.conftest import client, tiny_encoder_dir, tiny_encoder_zip  # noqa: F401 - shared fixtures
from tests.archives import zip_folder
from tests.factories import build_tiny_model
from tests.integration import harness
from workers.tasks.mlflow_run import recipe_params, report_metrics

RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
FAST_EVAL = {"max_samples": 16, "sequence_length": 32, "latency_warmup": 1, "latency_repeats": 2,
             "latency_batch_sizes": [1]}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def service(database, tmp_path_factory, tracking_uri):
    env = {"COMPRESSO_MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with harness.distributed_service(tmp_path_factory.mktemp("logs"), env=env) as client:
        yield client


def run_job(http: httpx.Client, model_id: str, mlflow: dict) -> dict:
    body = {"model_id": model_id, "recipe": RECIPE, "device": "cpu", "evaluation": FAST_EVAL, "mlflow": mlflow,
            "name": "mlflow-job"}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = harness.wait_for_status(http, response.json()["id"], harness.FINISHED)
    assert job["status"] == "succeeded", job
    return job


def test_the_run_and_the_registered_model_read_back_with_mlflow(service, tracking_uri, tmp_path):
    import mlflow

    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    model = harness.upload(service, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "tiny")
    job = run_job(service, model["id"], {"experiment_name": "ci", "registered_model_name": "tiny-compressed"})
    run_info = job["mlflow"]["run"]
    assert run_info["model_version"] == "1" and run_info["registered_model_name"] == "tiny-compressed"
    report = service.get(f"/v1/jobs/{job['id']}/report").json()

    reader = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = reader.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["compresso.job_id"] == job["id"]
    assert reader.get_experiment(run.info.experiment_id).name == "ci"
    assert run.data.params["step_1.technique"] == "quantize" and run.data.params["step_1.scheme"] == "int8_dynamic"
    assert run.data.metrics["result.size_bytes"] == report["result"]["size_bytes"]
    assert run.data.metrics["original.size_bytes"] == report["original"]["size_bytes"]
    assert run.data.metrics["fidelity.cosine_mean"] == pytest.approx(report["fidelity"]["metrics"]["cosine_mean"])
    assert run.data.metrics["job.water_l"] == pytest.approx(report["water"]["total"]["water_l"])
    assert run.data.metrics["job.embodied_gco2e"] == pytest.approx(report["embodied"]["total"]["gwp_g"])
    assert {"model.zip", "report.json"} <= {artifact.path for artifact in reader.list_artifacts(run.info.run_id)}
    # Next to the database, not in ./mlruns of whatever directory the worker runs in.
    store_dir = tracking_uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert run.info.artifact_uri.startswith(f"file://{store_dir}/mlartifacts/")
    version = reader.get_model_version("tiny-compressed", "1")
    assert version.run_id == run.info.run_id

    # The registered model serves through mlflow.pyfunc exactly as the downloaded model.onnx runs.
    artifact = next(a for a in job["artifacts"] if a["kind"] == "model")
    package = harness.download(service, artifact, tmp_path / "model.zip")
    with zipfile.ZipFile(package) as zipped:
        onnx_path = zipped.extract("model.onnx", tmp_path / "package")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(["a sentence to embed", "another one"], padding="max_length", truncation=True, max_length=16,
                        return_tensors="np")
    inputs = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    expected = session.run(None, inputs)[0]
    mlflow.set_tracking_uri(tracking_uri)
    served = mlflow.pyfunc.load_model("models:/tiny-compressed/1").predict(inputs)
    served = served[session.get_outputs()[0].name] if isinstance(served, dict) else np.asarray(served)
    np.testing.assert_allclose(np.asarray(served).reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)

    # A second job registers the next version of the same name.
    again = run_job(service, model["id"], {"registered_model_name": "tiny-compressed"})
    assert again["mlflow"]["run"]["model_version"] == "2"


def test_an_unreachable_tracking_server_does_not_fail_the_job(service, tmp_path):
    model_dir = build_tiny_model("encoder", tmp_path / "encoder")
    model = harness.upload(service, "/v1/models", zip_folder(model_dir, tmp_path / "encoder.zip"), "tiny")
    port = harness.free_port()  # nothing listens there
    job = run_job(service, model["id"], {"tracking_uri": f"http://127.0.0.1:{port}"})
    assert "error" in job["mlflow"] and "run" not in job["mlflow"]
    lines = [line["message"] for line in service.get(f"/v1/jobs/{job['id']}/logs").json()["lines"]]
    assert any(line.startswith("mlflow: the run could not be logged") for line in lines)


def test_mlflow_options_need_a_tracking_server(client, tiny_encoder_zip):  # noqa: F811
    from tests.app.conftest import upload

    model_id = upload(client, tiny_encoder_zip).json()["id"]
    for mlflow, field in (({"registered_model_name": "x"}, "tracking_uri"), ({"tracking_uri": "file:///etc"}, "tracking_uri"),
                          ({"tracking_uri": "http://x", "unknown": 1}, "unknown")):
        response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": RECIPE, "mlflow": mlflow})
        assert response.status_code == 422, mlflow
        assert response.json()["errors"][0]["loc"][:3] == ["body", "mlflow", field]


def test_params_and_metrics_are_flattened():
    recipe = {"steps": [{"technique": "low_rank", "version": 1, "params": {"energy": 0.99, "skip": ["pooler"]}}]}
    assert recipe_params(recipe) == {"step_1.technique": "low_rank", "step_1.version": "1", "step_1.energy": "0.99",
                                     "step_1.skip": '["pooler"]'}
    report = {"original": {"size_bytes": 10, "latency": {"batch_1": {"p50_ms": 2.0, "p95_ms": 3.0}, "device": "cpu"}},
              "ratios": {"compression_ratio": 4.0, "speedup": {"batch_1": 1.5}}, "fidelity": {"metrics": {"cosine_mean": 0.99}}}
    assert report_metrics(report) == {"original.size_bytes": 10.0, "original.latency.batch_1.p50_ms": 2.0,
                                      "original.latency.batch_1.p95_ms": 3.0, "compression_ratio": 4.0,
                                      "speedup.batch_1": 1.5, "fidelity.cosine_mean": 0.99}
