"""Per-step checkpoints: a job resumed from the checkpoint after step k does not run steps 1..k again,
and ends with the same result as a job that ran every step; a checkpoint that does not fit is refused
with the reason, and every step runs."""

import json
import shutil

import pytest

from tests.engine.conftest import FAST_EVAL
from tests.engine.test_finetune import FAST, topic_rows
from workers.engine.checkpoints.settings import checkpoint_key
from workers.engine.checkpoints.store import MANIFEST_FILE
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe

# Every kind of state a step leaves: a torch model with zeros, one with factorised layers, an ONNX file
# and a .cpz; and one with per-layer widths (pruned_shapes.json) in its own config folder.
CHAIN = [
    {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}},
    {"technique": "low_rank", "params": {"rank_fraction": 0.5}},
    {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
    {"technique": "huffman", "params": {"min_elements": 256}},
]
# Recovery training leaves transformers' output-capturing hooks (closures) on the model it saves.
HEADS = [
    {"technique": "prune", "params": {"structure": "heads", "sparsity": 0.5, "recover": {"max_steps": 4}}},
    {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
]


def _request(model_dir, steps, root, *, attempt, resume_dir=None, dataset=None, key=None):  # noqa: ANN001
    return PipelineRequest(
        model_dir=model_dir, recipe=Recipe.from_dict({"steps": steps}), dataset_path=dataset,
        work_dir=root / f"work-{attempt}", output_dir=root / f"out-{attempt}", eval=FAST_EVAL,
        checkpoints={
            "key": key or checkpoint_key({"steps": steps}, "cpu", None, None, {"model": str(model_dir)}),
            "attempt": attempt, "save_dir": root / f"checkpoints-{attempt}", "resume_dir": resume_dir,
        },
    )


def _run(request: PipelineRequest) -> tuple[dict, list[dict]]:
    events = []
    result = run_pipeline(request, lambda stage, fraction: None, events.append)
    return result.report, events


def _same_result(full: dict, resumed: dict) -> None:
    assert resumed["result"]["size_bytes"] == full["result"]["size_bytes"]
    assert resumed["result"]["num_parameters"] == full["result"]["num_parameters"]
    for name, value in full["fidelity"]["metrics"].items():
        assert resumed["fidelity"]["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("steps", [CHAIN, HEADS], ids=["prune-low_rank-quantize-huffman", "heads"])
def test_a_resumed_job_skips_the_saved_steps_and_ends_with_the_same_result(tiny_models, tmp_path, steps):
    model_dir = tiny_models["encoder"]
    full, events = _run(_request(model_dir, steps, tmp_path, attempt=1))
    assert [event["step"] for event in events if event["event"] == "checkpoint"] == list(range(1, len(steps) + 1))
    saved = full["job"]["checkpoints"]
    assert [entry["step"] for entry in saved["saved"]] == list(range(1, len(steps) + 1))
    assert saved["resumed_steps"] == [] and saved["problem"] is None

    for done in range(1, len(steps)):
        checkpoint = tmp_path / "checkpoints-1" / f"step-{done:02d}"
        resumed, _ = _run(_request(model_dir, steps, tmp_path / f"from-{done}", attempt=2, resume_dir=checkpoint))
        info = resumed["job"]["checkpoints"]
        assert info["resumed_from_attempt"] == 1 and info["resumed_steps"] == list(range(1, done + 1))
        assert [step["resumed_from_attempt"] for step in resumed["steps"]] == [1] * done + [None] * (len(steps) - done)
        # A restored step's report is the one its attempt wrote: same time, same fidelity.
        assert resumed["steps"][:done] == [{**step, "resumed_from_attempt": 1} for step in full["steps"][:done]]
        _same_result(full, resumed)
        # The job's energy is both attempts': attempt 1's load and evaluation, and the steps it ran.
        stages = [stage["stage"] for stage in resumed["energy"]["stages"]]
        if resumed["energy"]["method"] not in ("unavailable", "disabled"):
            assert "attempt_1.load" in stages and "attempt_1.evaluate_original" in stages and "load" in stages
            assert [stage for stage in stages if stage.startswith("step_")] == [
                f"step_{index + 1}.{step['technique']}" for index, step in enumerate(steps)
            ]
            assert len(stages) == len(set(stages))


def test_a_finetuned_job_resumes_with_its_new_task_and_reference(tiny_models, tmp_path):
    dataset = tmp_path / "topics.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in topic_rows(60)), encoding="utf-8")
    steps = [{"technique": "finetune", "params": FAST}, {"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]
    model_dir = tiny_models["encoder"]
    full, _ = _run(_request(model_dir, steps, tmp_path, attempt=1, dataset=dataset))
    resumed, _ = _run(_request(
        model_dir, steps, tmp_path / "again", attempt=2, dataset=dataset,
        resume_dir=tmp_path / "checkpoints-1" / "step-01",
    ))
    assert resumed["job"]["checkpoints"]["resumed_steps"] == [1]
    assert resumed["model"]["task"] == "text-classification"
    assert resumed["fidelity"]["reference"] == "step 1 (finetune)"
    assert resumed["fidelity"]["reference_quality"] == full["fidelity"]["reference_quality"]
    assert resumed["result"]["quality"] == full["result"]["quality"]
    assert resumed["steps"][1]["fidelity_after"] == full["steps"][1]["fidelity_after"]
    _same_result(full, resumed)


def test_a_checkpoint_that_does_not_fit_is_refused_and_every_step_runs(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    _run(_request(model_dir, HEADS, tmp_path, attempt=1))
    checkpoint = tmp_path / "checkpoints-1" / "step-01"

    # Another recipe or input: another key.
    other, _ = _run(_request(model_dir, HEADS, tmp_path / "other", attempt=2, resume_dir=checkpoint, key="0" * 64))
    assert "made for another recipe" in other["job"]["checkpoints"]["problem"]
    assert other["job"]["checkpoints"]["resumed_steps"] == []
    assert [step["resumed_from_attempt"] for step in other["steps"]] == [None, None]

    # Cut off before its manifest was written.
    cut = tmp_path / "cut"
    shutil.copytree(checkpoint, cut)
    (cut / MANIFEST_FILE).unlink()
    again, _ = _run(_request(model_dir, HEADS, tmp_path / "cut-run", attempt=2, resume_dir=cut))
    assert f"no readable {MANIFEST_FILE}" in again["job"]["checkpoints"]["problem"]

    # A damaged model file (the worker's sha256 check catches this before the engine; the engine copes too).
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoint, damaged)
    (damaged / "state" / "model.pt").write_bytes(b"not a model")
    broken, _ = _run(_request(model_dir, HEADS, tmp_path / "damaged-run", attempt=2, resume_dir=damaged))
    assert "could not be loaded" in broken["job"]["checkpoints"]["problem"]
    assert broken["job"]["checkpoints"]["resumed_steps"] == []


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_job(tiny_models, tmp_path):
    request = _request(tiny_models["encoder"], HEADS, tmp_path, attempt=1)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the checkpoints would go")
    request = request.model_copy(update={"checkpoints": request.checkpoints.model_copy(update={"save_dir": blocked})})
    report, events = _run(request)
    assert report["job"]["checkpoints"]["saved"] == [] and not [e for e in events if e["event"] == "checkpoint"]
    assert [problem.split(":")[0] for problem in report["job"]["checkpoints"]["not_saved"]] == ["step 1", "step 2"]
    assert len(report["steps"]) == 2
