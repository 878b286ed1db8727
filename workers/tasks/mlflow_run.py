"""Logs a finished job to MLflow: the recipe as params, the report's figures before and after as
metrics, the package and the report as artifacts, and the ONNX model as an MLflow model (the onnx
flavour, so `mlflow.pyfunc.load_model` serves it), registered under the name the job gives.

It runs in the worker before the job is marked succeeded, so a client that sees "succeeded" also
finds the run. A failure here never fails the job: it is recorded on the job and in its log.
A redelivered job finds its finished run by the `compresso.job_id` tag instead of logging twice.
"""

import json
import logging
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from workers.engine.package import MODEL_FILE
from workers.engine.packing.cpz import unpack_cpz

logger = logging.getLogger(__name__)

JOB_TAG = "compresso.job_id"
# MLflow's fluent API (start_run, onnx.log_model) keeps the tracking URI and the active run in
# process-wide state; jobs finishing at once on one worker log one after the other.
_FLUENT_LOCK = threading.Lock()
# A tracking server that is down must not hold a finished job for minutes (MLflow's default retries do).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def recipe_params(recipe: dict[str, Any]) -> dict[str, str]:
    """step_1.technique = quantize, step_1.scheme = int8_dynamic, ... (MLflow params are strings)."""
    params = {}
    for index, step in enumerate(recipe.get("steps", []), start=1):
        params[f"step_{index}.technique"] = step["technique"]
        params[f"step_{index}.version"] = str(step.get("version", ""))
        for name, value in step.get("params", {}).items():
            params[f"step_{index}.{name}"] = value if isinstance(value, str) else json.dumps(value)
    return params


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers, named by where they sit: original.size_bytes, result.latency.batch_1.p50_ms, ..."""
    metrics: dict[str, float] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        metrics[name] = float(value)

    for side in ("original", "result"):
        part = report.get(side) or {}
        for field in ("size_bytes", "total_size_bytes", "num_parameters"):
            add(f"{side}.{field}", part.get(field))
        for key, stats in (part.get("latency") or {}).items():
            if key.startswith("batch_") and isinstance(stats, dict):
                add(f"{side}.latency.{key}.p50_ms", stats.get("p50_ms"))
                add(f"{side}.latency.{key}.p95_ms", stats.get("p95_ms"))
        for field, value in (part.get("quality") or {}).items():
            add(f"{side}.quality.{field}", value)
    ratios = report.get("ratios") or {}
    add("compression_ratio", ratios.get("compression_ratio"))
    add("size_fraction", ratios.get("size_fraction"))
    for key, value in (ratios.get("speedup") or {}).items():
        add(f"speedup.{key}", value)
    for name, value in ((report.get("fidelity") or {}).get("metrics") or {}).items():
        add(f"fidelity.{name}", value)
    total = (report.get("energy") or {}).get("total") or {}
    add("job.energy_kwh", total.get("energy_kwh"))
    add("job.co2e_g", total.get("co2e_g"))
    add("job.wall_time_s", (report.get("job") or {}).get("wall_time_s"))
    for side in ("original", "result"):
        add(f"{side}.inference_kwh_per_1000", ((report.get("inference") or {}).get(side) or {}).get("kwh_per_1000_mean"))
    add("payback.break_even_inferences", (report.get("payback") or {}).get("break_even_inferences"))
    water, embodied = report.get("water") or {}, report.get("embodied") or {}
    add("job.water_l", (water.get("total") or {}).get("water_l"))
    add("job.embodied_gco2e", (embodied.get("total") or {}).get("gwp_g"))
    for side in ("original", "result"):
        add(f"{side}.water_l_per_1000", ((water.get("inference") or {}).get(side) or {}).get("water_l"))
        add(f"{side}.embodied_gco2e_per_1000", ((embodied.get("inference") or {}).get(side) or {}).get("gwp_g"))
    return metrics


def default_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts. MLflow's default for a database store is
    ./mlruns under the *current directory* of whichever process logs: for a SQLite store, keep them
    next to the database file instead. Servers (http) choose for themselves."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
        database = database if database.is_absolute() else Path.cwd() / database
        return (database.parent / "mlartifacts").as_uri()
    return None


def log_job_run(
    tracking_uri: str,
    experiment_name: str,
    registered_model_name: str | None,
    job: dict[str, Any],
    report: dict[str, Any],
    model_zip: Path,
    report_path: Path,
) -> dict[str, Any]:
    """Returns {tracking_uri, experiment_id, run_id, model_uri, registered_model_name, model_version}."""
    import mlflow  # imported here: it takes a second, and only jobs that log a run need it

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(experiment_name, artifact_location=default_artifact_location(tracking_uri))
    )
    existing = client.search_runs(
        [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job['id']}'", max_results=10
    )
    for run in existing:
        if run.info.status == "FINISHED" and run.data.tags.get("compresso.outcome"):
            return json.loads(run.data.tags["compresso.outcome"])
        client.set_terminated(run.info.run_id, status="FAILED")  # an attempt that died mid-way

    with _FLUENT_LOCK:
        mlflow.set_tracking_uri(tracking_uri)
        return _log_new_run(tracking_uri, experiment_id, registered_model_name, job, report, model_zip, report_path)


def _log_new_run(
    tracking_uri: str,
    experiment_id: str,
    registered_model_name: str | None,
    job: dict[str, Any],
    report: dict[str, Any],
    model_zip: Path,
    report_path: Path,
) -> dict[str, Any]:
    import mlflow
    import onnx

    tags = {JOB_TAG: job["id"], "compresso.model_id": job.get("model_id") or "", "mlflow.runName": job["name"] or job["id"]}
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({"device": job["device"], **recipe_params(job["recipe"])})
        mlflow.log_metrics(report_metrics(report))
        mlflow.log_artifact(str(model_zip))
        mlflow.log_artifact(str(report_path))
        with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(model_zip) as package:
            onnx_model = onnx.load(_packaged_onnx(package, Path(scratch)))
            logged = mlflow.onnx.log_model(
                onnx_model, name="model", registered_model_name=registered_model_name,
                onnx_execution_providers=["CPUExecutionProvider"],
            )
        outcome = {
            "tracking_uri": tracking_uri,
            "experiment_id": experiment_id,
            "run_id": run.info.run_id,
            "model_uri": logged.model_uri,
            "registered_model_name": registered_model_name,
            "model_version": str(logged.registered_model_version) if registered_model_name else None,
        }
        mlflow.set_tag("compresso.outcome", json.dumps(outcome))
    return outcome


def _packaged_onnx(package: zipfile.ZipFile, scratch: Path) -> str:
    """model.onnx from the package, decoded from its .cpz when the recipe ended in entropy coding."""
    names = package.namelist()
    if MODEL_FILE in names:
        return package.extract(MODEL_FILE, scratch)
    packed = next(name for name in names if name.endswith(".cpz"))
    unpack_cpz(Path(package.extract(packed, scratch)), scratch / "unpacked")
    return str(scratch / "unpacked" / MODEL_FILE)
