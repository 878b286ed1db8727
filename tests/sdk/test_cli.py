"""`compresso models|datasets|jobs ... --json` against a real `compresso serve`: one JSON document per
command, and the documented exit codes (0 ok, 1 job failed, 2 refused, 3 timed out, 4 unreachable)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from compresso import Client, JobFailed
from tests.factories import build_tiny_model
from tests.integration.harness import ROOT, free_port
from tests.sdk.conftest import FAST_EVALUATION, QUANTIZE, SLOW_EVALUATION


def compresso(server_url: str, *args: str) -> tuple[int, Any]:
    """Runs `compresso ARGS --json` as a user would, and returns its exit code and its JSON document."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPRESSO_")}
    env["COMPRESSO_URL"] = server_url
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180,
    )
    assert result.stdout.strip(), f"no JSON on stdout (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def test_the_whole_flow_in_json(server_url, model_folder, dataset_file, recipe_file, tmp_path):
    code, model = compresso(server_url, "models", "upload", str(model_folder), "--name", "cli-encoder")
    assert code == 0 and model["name"] == "cli-encoder" and model["architecture"] == "BertModel"
    code, dataset = compresso(server_url, "datasets", "upload", str(dataset_file))
    assert code == 0 and dataset["num_rows"] == 24
    assert model["id"] in {m["id"] for m in compresso(server_url, "models", "list")[1]}

    code, job = compresso(
        server_url, "jobs", "submit", "--model", model["id"], "--recipe", str(recipe_file), "--dataset", dataset["id"],
        "--name", "cli-flow", "--device", "cpu", "--evaluation", json.dumps(FAST_EVALUATION),
        "--wait", "--timeout", "120",
    )
    assert code == 0 and job["status"] == "succeeded" and job["name"] == "cli-flow", job
    assert job["id"] in {j["id"] for j in compresso(server_url, "jobs", "list", "--status", "succeeded")[1]}
    code, shown = compresso(server_url, "jobs", "show", job["id"])
    assert code == 0 and shown["steps"] == [{"index": 1, "technique": "quantize", "state": "done",
                                             "wall_time_s": shown["steps"][0]["wall_time_s"],
                                             "size_bytes_after": shown["steps"][0]["size_bytes_after"],
                                             "resumed_from_attempt": None, "resumed_inside": None}]
    code, report = compresso(server_url, "jobs", "report", job["id"])
    assert code == 0 and report["schema_version"] == 1

    code, downloaded = compresso(server_url, "jobs", "download", job["id"], "-o", str(tmp_path / "int8.zip"))
    assert code == 0 and downloaded["path"] == str(tmp_path / "int8.zip")
    artifact = next(a for a in job["artifacts"] if a["kind"] == "model")
    assert hashlib.sha256(Path(downloaded["path"]).read_bytes()).hexdigest() == artifact["sha256"]
    code, lines = compresso(server_url, "jobs", "logs", job["id"])
    assert code == 0 and "succeeded" in lines[-1]["message"]

    code, deleted = compresso(server_url, "datasets", "delete", dataset["id"])
    assert code == 0 and deleted == {"deleted": dataset["id"], "kind": "dataset"}
    assert dataset["id"] not in {d["id"] for d in compresso(server_url, "datasets", "list")[1]}


def test_a_refused_request_exits_2_with_the_problem(server_url, model_id, recipe_file, tmp_path):
    code, answer = compresso(server_url, "jobs", "submit", "--model", "no-such-model", "--recipe", str(recipe_file))
    assert code == 2 and answer["error"]["status"] == 422 and answer["error"]["errors"][0]["loc"][-1] == "model_id"

    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text(yaml.safe_dump({"steps": [{"technique": "quantize", "params": {"scheme": "int3"}}]}))
    code, answer = compresso(server_url, "jobs", "submit", "--model", model_id, "--recipe", str(bad_recipe))
    assert code == 2 and answer["error"]["type"] == "/problems/invalid-request"
    assert "int8_dynamic" in answer["error"]["errors"][0]["allowed"]

    code, answer = compresso(server_url, "models", "delete", "no-such-model")
    assert code == 2 and answer["error"]["status"] == 404
    code, answer = compresso(server_url, "jobs", "submit", "--model", model_id, "--recipe", str(tmp_path / "none.yaml"))
    assert code == 2 and "none.yaml" in answer["error"]["detail"]


def test_a_failed_job_exits_1(server_url, tmp_path):
    """Labels the classifier does not know make the engine refuse the job."""
    data = tmp_path / "bad-labels.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}", "label": "maybe"}) + "\n" for i in range(4)))
    with Client(server_url) as client:
        model = client.upload_model(build_tiny_model("classifier", tmp_path / "classifier"))
        dataset = client.upload_dataset(data)
    code, job = compresso(
        server_url, "jobs", "submit", "--model", model.id, "--dataset", dataset.id, "--recipe",
        json_file(tmp_path / "recipe.json", QUANTIZE), "--device", "cpu", "--wait", "--timeout", "120",
    )
    assert code == 1 and job["status"] == "failed" and "maybe" in job["error"]


def test_watch_times_out_with_3_and_a_cancelled_job_exits_1(server_url, model_id):
    with Client(server_url) as client:
        job = client.submit(model_id, QUANTIZE, device="cpu", evaluation=SLOW_EVALUATION)
        try:
            code, watched = compresso(server_url, "jobs", "watch", job.id, "--timeout", "1")
            assert code == 3 and watched["id"] == job.id and watched["status"] in ("queued", "running")
        finally:
            code, cancelled = compresso(server_url, "jobs", "cancel", job.id)
        assert code == 0 and (cancelled["status"] == "cancelled" or cancelled["cancel_requested"])
        with pytest.raises(JobFailed):
            client.wait(job.id, timeout=60, poll_seconds=0.2)
    code, watched = compresso(server_url, "jobs", "watch", job.id)
    assert code == 1 and watched["status"] == "cancelled"


def test_an_unreachable_server_exits_4():
    code, answer = compresso(f"http://127.0.0.1:{free_port()}", "models", "list")
    assert code == 4 and answer["error"]["status"] is None and "Connection" in answer["error"]["title"]


def json_file(path: Path, document: dict) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def test_labelling_from_the_command_line(server_url, model_id, dataset_file):
    code, dataset = compresso(server_url, "datasets", "upload", str(dataset_file), "--name", "cli-labels")
    assert code == 0
    code, suggestion = compresso(server_url, "datasets", "suggest-labels", dataset["id"], "--model", model_id, "-n", "3")
    assert code == 0 and suggestion["status"] == "succeeded" and len(suggestion["rows"]) == 3
    pairs = [f"{item['row']}=news" for item in suggestion["rows"]]
    code, labelled = compresso(server_url, "datasets", "label", dataset["id"], *pairs)
    assert code == 0 and (labelled["version"], labelled["num_labelled"], labelled["parent_id"]) == (2, 3, dataset["id"])
    code, versions = compresso(server_url, "datasets", "versions", dataset["id"])
    assert code == 0 and [item["version"] for item in versions] == [1, 2]
    code, unlabelled = compresso(server_url, "datasets", "label", labelled["id"], pairs[0].split("=")[0] + "=")
    assert code == 0 and unlabelled["num_labelled"] == 2
    code, refused = compresso(server_url, "datasets", "label", dataset["id"], "first=news")
    assert code == 2 and "ROW=LABEL" in refused["error"]["detail"]
