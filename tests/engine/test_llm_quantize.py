"""llm_quantize: llm-compressor, in its own interpreter, turns a causal LM into a compressed-tensors
checkpoint that plain transformers reloads to the same model it quantized. Every architecture family
goes through 4-bit GPTQ, every scheme through Llama, and one job runs end to end."""

import json
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.engine.conftest import FAST_EVAL
from tests.factories import CAUSAL_LM_ARCHITECTURES, SAMPLE_TEXTS, build_tiny_causal_lm
from workers.engine.errors import EngineUserError
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.target import Target, step_task_problems, target_problems
from workers.engine.techniques.llm.config import LlmQuantizeConfig
from workers.engine.techniques.llm.handler import SCRIPT, default_llm_python, script_spec

TORCH_CPU = {"runtime": "torch", "device": "cpu"}
PROBE_IDS = [[5, 17, 42, 99, 7, 3, 250, 12, 64, 31, 8, 150]]

pytestmark = pytest.mark.skipif(
    not default_llm_python().exists(), reason="no .venv-llm: run `make install` (it builds llm-compressor's venv)"
)


@pytest.fixture(scope="module")
def causal_lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal-lms")
    return {name: build_tiny_causal_lm(name, root / name) for name in CAUSAL_LM_ARCHITECTURES}


def _oneshot(model_dir, tmp_path, **params):
    """Runs the script as the handler does; returns the output folder and the fake-quantized logits."""
    config = LlmQuantizeConfig(**{"group_size": 32, **params})
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": text}) + "\n" for text in SAMPLE_TEXTS * 4), encoding="utf-8")
    spec = script_spec(config, model_dir, tmp_path / "out", calibration, sequence_length=64) | {
        "probe_ids": PROBE_IDS, "probe_output": str(tmp_path / "fake_quantized.npy"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [str(default_llm_python()), str(SCRIPT), str(tmp_path / "spec.json")],
        capture_output=True, text=True, timeout=300, env={"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return tmp_path / "out", np.load(tmp_path / "fake_quantized.npy"), events


def _reloaded_logits(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model, model(input_ids=torch.tensor(PROBE_IDS)).logits.numpy()


def _assert_reloads_to_the_quantized_model(folder, fake_quantized):
    model, logits = _reloaded_logits(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    np.testing.assert_allclose(logits, fake_quantized, atol=2e-3 * np.abs(fake_quantized).max(), rtol=0)
    return model, config


@pytest.mark.parametrize("architecture", CAUSAL_LM_ARCHITECTURES)
def test_every_architecture_goes_through_gptq_w4a16_and_reloads(causal_lms, tmp_path, architecture):
    folder, fake_quantized, events = _oneshot(causal_lms[architecture], tmp_path, scheme="w4a16")
    _, config = _assert_reloads_to_the_quantized_model(folder, fake_quantized)
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["actorder"]) == (4, 32, "static")
    assert config["quantization_config"]["ignore"] == ["lm_head"]
    layers = [event for event in events if event["event"] == "layer"]
    assert layers and layers[-1]["index"] == layers[-1]["total"]
    # Two 4-bit weights per byte: each packed projection takes an eighth of its fp32 bytes.
    original = AutoModelForCausalLM.from_pretrained(causal_lms[architecture])
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as tensors:
        packed = tensors.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
    dense = original.model.layers[0].mlp.down_proj.weight
    assert packed.numel() * packed.element_size() * 8 == dense.numel() * 4


@pytest.mark.parametrize(
    "params",
    [
        {"scheme": "w4a16", "algorithm": "rtn"},
        {"scheme": "w4a16", "algorithm": "awq"},
        {"scheme": "w8a16"},
        {"scheme": "w8a8"},
        {"scheme": "fp8"},
        {"scheme": "fp8", "sparsity": "2:4"},
    ],
    ids=lambda params: "-".join(str(value) for value in params.values()),
)
def test_every_scheme_reloads_to_the_model_it_quantized(causal_lms, tmp_path, params):
    folder, fake_quantized, _ = _oneshot(causal_lms["llama"], tmp_path, **params)
    model, config = _assert_reloads_to_the_quantized_model(folder, fake_quantized)
    if params.get("sparsity") == "2:4":
        weight = model.model.layers[0].mlp.up_proj.weight.reshape(-1, 4)
        assert ((weight == 0).sum(dim=1) >= 2).all()


def test_fp8_kv_cache_scales_are_calibrated_for_vllm(causal_lms, tmp_path):
    # transformers does not quantize its KV cache from these scales (it reports them unexpected); vLLM reads them.
    folder, _, _ = _oneshot(causal_lms["llama"], tmp_path, scheme="fp8", kv_cache="fp8")
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["kv_cache_scheme"]["type"] == "float"
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as tensors:
        scales = [tensors.get_tensor(f"model.layers.{i}.self_attn.{kv}_scale") for i in (0, 1) for kv in "kv"]
    assert all(scale.numel() == 1 and float(scale) > 0 for scale in scales)


def test_keep_patterns_leave_layers_in_16_bits(causal_lms, tmp_path):
    folder, fake_quantized, events = _oneshot(
        causal_lms["llama"], tmp_path, scheme="w4a16", algorithm="rtn", keep=["lm_head", r"layers\.0\.mlp\.down_proj"]
    )
    assert events[-1]["kept_layers"] == ["model.layers.0.mlp.down_proj", "lm_head"]
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as tensors:
        names = set(tensors.keys())
    assert "model.layers.0.mlp.down_proj.weight" in names and "model.layers.1.mlp.down_proj.weight_packed" in names


def test_a_job_ships_the_checkpoint_and_reports_perplexity(causal_lms, tmp_path):
    request = PipelineRequest(
        model_dir=causal_lms["qwen3"], target=TORCH_CPU, work_dir=tmp_path / "work", output_dir=tmp_path / "out",
        recipe=Recipe.from_dict({"steps": [{"technique": "llm_quantize", "params": {"scheme": "w8a8"}}]}),
        eval=FAST_EVAL,
    )
    progress = []
    report = run_pipeline(request, lambda stage, fraction: progress.append((stage, fraction))).report
    step = report["steps"][0]
    assert step["format_after"] == "compressed-tensors" and step["placement"] == {"quantize": "cpu"}
    assert step["details"]["smoothing_strength"] == 0.8 and step["details"]["kept_layers"] == ["lm_head"]
    assert report["result"]["format"] == "safetensors" and report["ratios"]["compression_ratio"] > 1.5
    assert report["fidelity"]["metrics"]["token_top1_agreement"] > 0.5
    for pair in report["perplexity"].values():
        assert pair["tokens"] > 100 and pair["original"] > 1 and abs(pair["relative_increase"]) < 0.5
    assert report["perplexity"]["general"]["source"] == "builtin"
    for side in ("original", "result"):  # generation measured on the target, with the KV cache
        generation = report[side]["generation"]
        assert set(generation["batches"]) == {"batch_1", "batch_32"} and generation["device"] == "cpu"
        assert all(stats["decode_tokens_per_s"] > 0 for stats in generation["batches"].values())
        side = report["generation_energy"][side]  # energy per 1,000 generated tokens, several runs each
        assert side["kwh_per_1000_mean"] > 0 and len(side["runs"]) == FAST_EVAL["energy_repeats"]
    assert "generation_energy" in [stage["stage"] for stage in report["energy"]["stages"]]
    assert "generated tokens" in report["generation_energy"]["payback"]["explanation"]
    stages = [fraction for stage, fraction in progress if stage.startswith("step")]
    assert stages == sorted(stages) and len(stages) > 3
    with zipfile.ZipFile(tmp_path / "out" / "model.zip") as archive:
        names = set(archive.namelist())
    assert {"model.safetensors", "config.json", "recipe.yaml", "tokenizer.json", "report.json"} <= names
    assert "quantization_config" in json.loads((tmp_path / "work" / "package" / "config.json").read_text())
    card = (tmp_path / "work" / "package" / "README.md").read_text()
    assert "vllm serve ." in card and "Perplexity, the job's texts" in card and "Decode tokens/s, batch 32" in card
    assert "kWh per 1,000 generated tokens before" in card


def test_a_bf16_upload_is_held_in_bf16_and_read_where_it_is(causal_lms, tmp_path):
    """No float32 copy and no written copy: the job holds the upload's bf16, and llm-compressor reads the
    upload's own folder, which it leaves as it was."""
    upload = tmp_path / "upload"
    AutoModelForCausalLM.from_pretrained(causal_lms["llama"]).to(torch.bfloat16).save_pretrained(upload)
    for path in causal_lms["llama"].iterdir():  # the tokenizer's files
        if path.suffix != ".safetensors" and not (upload / path.name).exists():
            (upload / path.name).write_bytes(path.read_bytes())
    before = {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in upload.iterdir()}
    request = PipelineRequest(
        model_dir=upload, target=TORCH_CPU, work_dir=tmp_path / "work", output_dir=tmp_path / "out",
        recipe=Recipe.from_dict({"steps": [{"technique": "llm_quantize", "params": {"scheme": "w8a16",
                                                                                  "algorithm": "rtn"}}]}),
        eval=FAST_EVAL,
    )
    report = run_pipeline(request, lambda stage, fraction: None).report
    assert report["steps"][0]["details"]["held_dtype"] == "bfloat16"
    step_dir = tmp_path / "work" / "steps" / "01-llm_quantize"
    assert json.loads((step_dir / "oneshot.json").read_text())["model_dir"] == str(upload)
    assert not (step_dir / "input").exists()
    assert {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in upload.iterdir()} == before
    assert report["job"]["peak_rss_mb"] > 100
    metrics = report["fidelity"]["metrics"]
    assert metrics["token_top1_agreement"] > 0.5 and 0 < metrics["token_kl_mean"] < 1


def test_recipes_and_targets_that_cannot_take_llm_quantize_are_refused():
    steps = [{"technique": "llm_quantize", "params": {"scheme": "w4a16"}}]
    [problem] = target_problems(steps, Target(), "cpu")
    assert problem["loc"] == ["recipe", "steps", 0, "technique"] and "torch" in problem["msg"]
    [problem] = step_task_problems(steps, "feature-extraction")
    assert "causal language models" in problem["msg"]
    with pytest.raises(RecipeError, match="must be the last"):
        Recipe.from_dict({"steps": [*steps, {"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}}]})
    with pytest.raises(RecipeError, match="awq"):
        Recipe.from_dict({"steps": [{"technique": "llm_quantize", "params": {"scheme": "w8a8", "algorithm": "awq"}}]})
    with pytest.raises(RecipeError, match="smoothing_strength"):
        Recipe.from_dict({"steps": [{"technique": "llm_quantize", "params": {"scheme": "fp8", "smoothing_strength": 0.5}}]})


def test_a_missing_interpreter_is_a_clear_user_error(causal_lms, tmp_path):
    request = PipelineRequest(
        model_dir=causal_lms["llama"], target=TORCH_CPU, work_dir=tmp_path / "work", output_dir=tmp_path / "out",
        recipe=Recipe.from_dict({"steps": [{"technique": "llm_quantize", "params": {"scheme": "fp8"}}]}),
        eval=FAST_EVAL, llm_python=tmp_path / "nowhere" / "python",
    )
    with pytest.raises(EngineUserError, match="make install"):
        run_pipeline(request, lambda stage, fraction: None)
