"""Checkpoints inside llm_quantize, between decoder layers: llm-compressor killed after layer k and started
again from its checkpoint writes the same bytes as a run that was never stopped, in one pass (GPTQ, AWQ) and
in two (SmoothQuant, then GPTQ); a job killed inside the step goes on from there, counting both attempts'
energy; and a checkpoint inside a later step holds the model the step before left."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.engine.conftest import FAST_EVAL
from tests.factories import SAMPLE_TEXTS, build_tiny_causal_lm
from workers.engine.checkpoints.settings import checkpoint_key
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe
from workers.engine.techniques.llm.config import LlmQuantizeConfig
from workers.engine.techniques.llm.handler import SCRIPT, default_llm_python, script_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
# The jobs here are about checkpoints: their evaluation is cut to what still runs every stage.
LIGHT_EVAL = FAST_EVAL | {"max_samples": 16, "latency_batch_sizes": [1], "energy_repeats": 2,
                          "perplexity_max_tokens": 512}
LAYERS = 4  # llm-compressor's subgraphs: one per decoder layer, and the head after them

pytestmark = pytest.mark.skipif(
    not default_llm_python().exists(), reason="no .venv-llm: run `make install` (it builds llm-compressor's venv)"
)


@pytest.fixture(scope="module")
def causal_lms(tmp_path_factory):
    """A function: the tiny LM of an architecture, with LAYERS layers, built once."""
    built = {}

    def build(architecture: str) -> Path:
        if architecture not in built:
            folder = tmp_path_factory.mktemp(architecture) / "model"
            built[architecture] = build_tiny_causal_lm(architecture, folder, layers=LAYERS)
        return built[architecture]

    return build


@pytest.fixture(scope="module")
def llama(causal_lms) -> Path:
    return causal_lms("llama")


def _script(model_dir: Path, root: Path, name: str, params: dict, extra: dict, kill_at: tuple[int, int] | None = None):
    """Runs oneshot_script.py as the handler does; SIGKILLs it once it has saved the checkpoint after
    (pass, layer) `kill_at`. Returns its exit code and events."""
    calibration = root / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": text}) + "\n" for text in SAMPLE_TEXTS * 4), encoding="utf-8")
    spec = script_spec(LlmQuantizeConfig(group_size=32, **params), model_dir, root / name, calibration, 64) | extra
    spec_path = root / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    process = subprocess.Popen(
        [str(default_llm_python()), str(SCRIPT), str(spec_path)], stdout=subprocess.PIPE,
        stderr=(root / f"{name}.stderr").open("w"), text=True,
        env={"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]},
    )
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if kill_at and events[-1]["event"] == "layer_checkpoint" and \
                (events[-1]["pass"], events[-1]["layers_done"]) == kill_at:
            process.kill()
            break
    return process.wait(timeout=300), events


def _weights(folder: Path) -> dict:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.mark.parametrize(("architecture", "params", "kill_at"), [
    # SmoothQuant's pass, then GPTQ's: killed in the second. (GPTQ alone, in one pass, is compared byte for
    # byte by the later-step test below.)
    ("llama", {"scheme": "w8a8"}, (2, 2)),
    # Gemma's offset norms are swapped for calibration stand-ins, which AWQ smooths: they are saved too.
    ("gemma", {"scheme": "w4a16", "algorithm": "awq"}, (1, 2)),
], ids=["smoothquant-gptq-w8a8-llama", "awq-gemma"])
def test_a_oneshot_killed_between_layers_goes_on_to_the_same_bytes(causal_lms, tmp_path, architecture, params, kill_at):
    model_dir = causal_lms(architecture)
    code, events = _script(model_dir, tmp_path, "whole", params, {})
    assert code == 0 and not [event for event in events if event["event"] == "layer_checkpoint"]
    every_layer = {"layer_checkpoints": {"dir": str(tmp_path / "first"), "interval_s": 0}}
    code, events = _script(model_dir, tmp_path, "killed", params, every_layer, kill_at=kill_at)
    saved = [event for event in events if event["event"] == "layer_checkpoint"]
    assert code == -signal.SIGKILL and (saved[-1]["pass"], saved[-1]["layers_done"]) == kill_at
    assert saved[0]["layers"] == LAYERS + 1 and [event["layers_done"] for event in saved[:2]] == [1, 2]

    again = {"resume_layers": saved[-1]["path"], "layer_checkpoints": {"dir": str(tmp_path / "second"), "interval_s": 0}}
    code, events = _script(model_dir, tmp_path, "resumed", params, again)
    assert code == 0, (tmp_path / "resumed.stderr").read_text()[-3000:]
    [resumed] = [event for event in events if event["event"] == "layers_resumed"]
    assert (resumed["pass"], resumed["layers_done"]) == kill_at
    layers = [(event["index"], event["resumed"]) for event in events if event["event"] == "layer"]
    # Every layer of the passes before, and the first ones of the pass it was killed in, are not calibrated again.
    skipped = (kill_at[0] - 1) * (LAYERS + 1) + kill_at[1]
    assert [resumed for _, resumed in layers] == [True] * skipped + [False] * (len(layers) - skipped)
    whole, again = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert whole.keys() == again.keys()
    assert [name for name in whole if not whole[name].equal(again[name])] == []


def _engine_spec(model_dir: Path, root: Path, attempt: int, resume_dir: str | None) -> dict:
    steps = [{"technique": "llm_quantize", "params": {"scheme": "w4a16", "group_size": 32}}]
    return {
        "model_dir": str(model_dir), "recipe": {"steps": steps}, "dataset_path": None, "device": "cpu",
        "target": {"runtime": "torch", "device": "cpu"},
        "work_dir": str(root / f"work-{attempt}"), "output_dir": str(root / f"out-{attempt}"),
        "eval": LIGHT_EVAL,
        "checkpoints": {
            "key": checkpoint_key({"steps": steps}, "cpu", None, None, {"model": str(model_dir)}),
            "attempt": attempt, "save_dir": str(root / f"checkpoints-{attempt}"), "resume_dir": resume_dir,
            "within_step_interval_s": 0,
        },
    }


def _engine(spec: dict, root: Path, kill_inside_step_after: int | None = None) -> tuple[int, list[dict]]:
    """`python -m workers.engine run`, as the worker starts it (its own process group); SIGKILLs the group
    once a checkpoint inside the step after that many layers is announced."""
    spec_path = root / f"spec-{spec['checkpoints']['attempt']}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.engine", "run", "--spec", str(spec_path)], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        within = events[-1].get("within_step") or {}
        if kill_inside_step_after is not None and within.get("layers_done") == kill_inside_step_after:
            os.killpg(process.pid, signal.SIGKILL)  # the engine and llm-compressor under it
            break
    return process.wait(timeout=600), events


def test_a_job_killed_inside_llm_quantize_goes_on_from_its_last_layer(llama, tmp_path):
    code, events = _engine(_engine_spec(llama, tmp_path, 1, None), tmp_path, kill_inside_step_after=3)
    assert code == -signal.SIGKILL
    checkpoint = [event for event in events if event["event"] == "checkpoint"][-1]
    assert checkpoint["step"] == 1 and checkpoint["within_step"] == {"pass": 1, "passes": 1, "layers_done": 3,
                                                                      "layers": LAYERS + 1}
    manifest = json.loads((Path(checkpoint["path"]) / "manifest.json").read_text())
    assert manifest["steps_done"] == 0 and manifest["state"] is None  # the upload is the state before step 1

    code, events = _engine(_engine_spec(llama, tmp_path, 2, checkpoint["path"]), tmp_path)
    assert code == 0, events[-1]
    report = json.loads(Path(events[-1]["report_path"]).read_text())
    info = report["job"]["checkpoints"]
    assert info["resumed_from_attempt"] == 1 and info["resumed_steps"] == []
    assert info["resumed_within_step"] == {"step": 1, "pass": 1, "passes": 1, "layers_done": 3, "layers": LAYERS + 1}
    step = report["steps"][0]
    assert step["details"]["resumed_layers"] == {"pass": 1, "passes": 1, "layers_done": 3, "layers": LAYERS + 1}
    assert step["details"]["layer_resume_problem"] is None
    assert len(step["details"]["layer_seconds"]) == LAYERS + 1 - 3 - 1  # the layers it calibrated itself
    assert step["format_after"] == "compressed-tensors"
    if report["energy"]["method"] not in ("unavailable", "disabled"):
        stages = [stage["stage"] for stage in report["energy"]["stages"]]
        assert "attempt_1.step_1.llm_quantize" in stages and "step_1.llm_quantize" in stages


def test_a_checkpoint_inside_a_later_step_holds_the_model_the_step_before_left(llama, tmp_path):
    """llm_quantize after a prune step: the checkpoint inside it holds the pruned model (the folder
    llm-compressor was handed), and the job resumed from it ends with the same weights as the whole job."""
    steps = [{"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.3}},
             {"technique": "llm_quantize", "params": {"scheme": "w4a16", "group_size": 32}}]

    def request(attempt: int, resume_dir: Path | None) -> PipelineRequest:
        spec = _engine_spec(llama, tmp_path, attempt, None if resume_dir is None else str(resume_dir))
        return PipelineRequest.model_validate(spec | {"recipe": Recipe.from_dict({"steps": steps})} | {
            "checkpoints": spec["checkpoints"] | {"key": checkpoint_key({"steps": steps}, "cpu", None, None,
                                                                         {"model": str(llama)})}})

    events = []
    run_pipeline(request(1, None), lambda stage, fraction: None, events.append)
    inside = [event for event in events if event["event"] == "checkpoint" and event.get("within_step")]
    assert [event["within_step"]["layers_done"] for event in inside] == list(range(1, LAYERS + 1))
    middle = Path(inside[1]["path"])
    manifest = json.loads((middle / "manifest.json").read_text())
    assert manifest["steps_done"] == 1 and manifest["state"]["torch_model"] == "pretrained"
    assert manifest["in_step"]["progress"]["layers_done"] == 2 and len(manifest["step_reports"]) == 1

    resumed = run_pipeline(request(2, middle), lambda stage, fraction: None, lambda event: None)
    info = resumed.report["job"]["checkpoints"]
    assert info["resumed_steps"] == [1] and info["resumed_within_step"]["layers_done"] == 2
    assert resumed.report["steps"][0]["resumed_from_attempt"] == 1
    first, second = _weights(tmp_path / "work-1" / "package"), _weights(tmp_path / "work-2" / "package")
    assert any(name.endswith("weight_packed") for name in first) and first.keys() == second.keys()
    assert [name for name in first if not first[name].equal(second[name])] == []

    # A checkpoint llm-compressor cannot take back (its activations lost): the step starts over, and says why.
    damaged = tmp_path / "damaged"
    shutil.copytree(middle, damaged)
    (damaged / "in_step" / "activations.pt").unlink()
    again = run_pipeline(request(3, damaged), lambda stage, fraction: None, lambda event: None)
    details = again.report["steps"][1]["details"]
    assert details["resumed_layers"] is None and "activations.pt" in details["layer_resume_problem"]
    third = _weights(tmp_path / "work-3" / "package")
    assert [name for name in first if not first[name].equal(third[name])] == []
