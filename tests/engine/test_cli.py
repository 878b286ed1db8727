"""`python -m workers.engine run --spec`: JSON lines on stdout, exit codes 0 / 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.engine.conftest import FAST_EVAL, QUANTIZE_RECIPE

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(spec: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "workers.engine", "run", "--spec", str(spec_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def events_of(completed: subprocess.CompletedProcess) -> list[dict]:
    # Every stdout line must be one JSON event: library noise belongs on stderr.
    return [json.loads(line) for line in completed.stdout.splitlines()]


def base_spec(model_dir: Path, tmp_path: Path) -> dict:
    return {
        "model_dir": str(model_dir), "recipe": QUANTIZE_RECIPE, "dataset_path": None, "device": "cpu",
        "work_dir": str(tmp_path / "work"), "output_dir": str(tmp_path / "out"),
        "eval": FAST_EVAL | {"max_samples": 32},
    }


def test_run_prints_progress_then_done(tiny_models, tmp_path):
    completed = run_cli(base_spec(tiny_models["encoder"], tmp_path), tmp_path)
    assert completed.returncode == 0, completed.stderr
    events = events_of(completed)
    progress = [event for event in events if event["event"] == "progress"]
    assert len(progress) >= 10
    assert all(0.0 <= event["fraction"] <= 1.0 and event["stage"] for event in progress)
    done = events[-1]
    assert done["event"] == "done"
    assert Path(done["model_zip"]).is_file() and Path(done["report_path"]).is_file()
    assert json.loads(Path(done["report_path"]).read_text())["evaluation"]["num_samples"] == 32


def test_bad_recipe_is_an_error_event_and_exit_2(tiny_models, tmp_path):
    spec = base_spec(tiny_models["encoder"], tmp_path)
    spec["recipe"] = {"steps": [{"technique": "quantize", "params": {"scheme": "int4"}}]}
    completed = run_cli(spec, tmp_path)
    assert completed.returncode == 2
    [event] = events_of(completed)
    assert event["event"] == "error" and "recipe.steps.0.params.scheme" in event["message"]
    assert "int8_dynamic" in event["errors"][0]["allowed"]


def test_user_error_inside_the_pipeline_exits_2(tmp_path):
    spec = base_spec(tmp_path / "missing-model", tmp_path)
    completed = run_cli(spec, tmp_path)
    assert completed.returncode == 2
    assert events_of(completed)[-1]["event"] == "error"


def test_unknown_spec_field_exits_2(tiny_models, tmp_path):
    spec = base_spec(tiny_models["encoder"], tmp_path) | {"priority": "high"}
    completed = run_cli(spec, tmp_path)
    assert completed.returncode == 2
    assert "priority" in events_of(completed)[-1]["message"]


def test_a_gpu_out_of_memory_message_names_the_stage_and_the_request():
    from workers.engine.__main__ import gpu_out_of_memory_message

    # torch's own wording (c10/cuda/CUDACachingAllocator.cpp), as a cuda job raises it.
    error = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.80 GiB of which "
        "3.12 GiB is free. Including non-PyTorch memory, this process has 136.60 GiB memory in use.\n"
        "Of the allocated memory 130.00 GiB is allocated by PyTorch"
    )
    message = gpu_out_of_memory_message("step_1.distill", error)
    assert message.startswith("The job ran out of GPU memory in step_1.distill: CUDA out of memory")
    assert "Tried to allocate 20.00 GiB" in message and "smaller batch_size" in message
    assert "Of the allocated" not in message


def test_a_failed_target_check_exits_2_with_the_field_to_fix(tiny_models, tmp_path):
    spec = base_spec(tiny_models["encoder"], tmp_path) | {
        "recipe": {"steps": [{"technique": "cluster", "params": {"bits": 4}}]},
        "target": {"runtime": "torch", "device": "cpu"},
    }
    completed = run_cli(spec, tmp_path)
    assert completed.returncode == 2, completed.stderr
    [error] = [event for event in events_of(completed) if event["event"] == "error"]
    assert "recipe.steps.0.technique" in error["message"] and "torch target" in error["message"]
