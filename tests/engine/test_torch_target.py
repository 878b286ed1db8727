"""A job whose target runtime is torch: the result ships as a transformers folder (half precision, or
torchao's quantized weights) that plain from_pretrained reloads, and both models are measured on torch
on the target's device. Recipes that cannot build such a folder are refused before any work."""

import zipfile

import numpy as np
import pytest
import torch

from tests.engine.conftest import FAST_EVAL
from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.errors import EngineUserError
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.target import Target, target_problems

TORCH_CPU = {"runtime": "torch", "device": "cpu"}


def _run(model_dir, tmp_path, steps, target=TORCH_CPU, dataset=None):
    request = PipelineRequest(
        model_dir=model_dir, recipe=Recipe.from_dict({"steps": steps}), dataset_path=dataset, target=target,
        work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=FAST_EVAL,
    )
    return run_pipeline(request, lambda stage, fraction: None)


@pytest.fixture(scope="module")
def int8_encoder_run(tiny_models, tmp_path_factory):
    steps = [{"technique": "quantize", "params": {"scheme": "int8_weight_only"}}]
    return _run(tiny_models["encoder"], tmp_path_factory.mktemp("int8-torch"), steps)


def test_int8_torch_result_is_a_transformers_folder_measured_on_torch(int8_encoder_run):
    report = int8_encoder_run.report
    assert report["job"]["target"] == TORCH_CPU
    assert report["result"]["format"] == "safetensors" and report["result"]["runtime"] == "pytorch"
    assert report["original"]["latency"]["device"] == report["result"]["latency"]["device"] == "cpu"
    step = report["steps"][0]
    assert step["details"]["kernels"].startswith("torchao Int8WeightOnlyConfig")
    assert step["details"]["layers_quantized"] > 0 and step["placement"] == {"quantization": "cpu"}
    assert step["details"]["embeddings_quantized"] is True
    assert report["fidelity"]["metrics"]["cosine_mean"] > 0.999
    # int8 Linear weights beside full-precision embeddings: smaller, and the size is the safetensors file's.
    assert report["ratios"]["compression_ratio"] > 1.2
    paths = {item["path"] for item in report["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= paths and "model.onnx" not in paths


def test_the_shipped_folder_reloads_with_plain_from_pretrained_and_matches(
    int8_encoder_run, tiny_models, tmp_path, monkeypatch
):
    with zipfile.ZipFile(int8_encoder_run.model_zip) as archive:
        archive.extractall(tmp_path)
    reloaded = AUTO_CLASS_BY_TASK["feature-extraction"].from_pretrained(tmp_path).eval()
    assert type(reloaded.encoder.layer[0].intermediate.dense.weight).__name__ == "Int8Tensor"
    assert type(reloaded.embeddings.word_embeddings.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(reloaded.encoder.layer[0].intermediate.dense.bias).__name__ == "Parameter"
    original = AUTO_CLASS_BY_TASK["feature-extraction"].from_pretrained(tiny_models["encoder"]).eval()
    ids = torch.tensor([[2, 7, 11, 5, 3]])
    with torch.inference_mode():
        got, want = (model(input_ids=ids).last_hidden_state.flatten() for model in (reloaded, original))
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.999
    # And the card's snippet runs there, as a user would run it.
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "library_name: transformers" in card and "from_pretrained(\".\", dtype=\"auto\"" in card
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own generated code
    assert np.isfinite(namespace["embeddings"]).all()


def test_bf16_classifier_ships_bf16_weights(tiny_models, labelled_dataset, tmp_path):
    steps = [{"technique": "quantize", "params": {"scheme": "bf16"}}]
    result = _run(tiny_models["classifier"], tmp_path, steps, dataset=labelled_dataset)
    report = result.report
    assert report["steps"][0]["details"]["compute_dtype"] == "bfloat16"
    assert report["fidelity"]["metrics"]["top1_agreement"] >= 0.8
    assert 1.8 < report["ratios"]["compression_ratio"] < 2.1
    with zipfile.ZipFile(result.model_zip) as archive:
        archive.extractall(tmp_path / "unzipped")
    reloaded = AUTO_CLASS_BY_TASK["text-classification"].from_pretrained(tmp_path / "unzipped")
    assert reloaded.dtype == torch.bfloat16


def test_a_torch_target_without_quantize_ships_the_pruned_model(tiny_models, tmp_path):
    steps = [{"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}}]
    report = _run(tiny_models["encoder"], tmp_path, steps).report
    assert report["result"]["format"] == "safetensors" and report["result"]["runtime"] == "pytorch"


def test_gpt2_has_no_linear_layers_for_torchao_and_says_so(tiny_models, tmp_path):
    steps = [{"technique": "quantize", "params": {"scheme": "int8_weight_only"}}]
    with pytest.raises(EngineUserError, match="Conv1D"):
        _run(tiny_models["causal-lm"], tmp_path, steps)


def _quantize(**params):
    return [{"technique": "quantize", "params": params}]


@pytest.mark.parametrize(
    ("steps", "target", "device", "loc", "needle"),
    [
        (_quantize(scheme="int8_dynamic"), Target(device="cuda"), "cpu", ["target", "device"], "GPU worker"),
        ([{"technique": "cluster", "params": {"bits": 4}}], Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "technique"], "codebook"),
        ([{"technique": "low_rank", "params": {}}], Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "technique"], "factorised"),
        (_quantize(scheme="fp8"), Target(), "cpu", ["recipe", "steps", 0, "params", "scheme"], "fp8 is for target"),
        (_quantize(scheme="int8_static"), Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "params", "scheme"], "no torch form"),
        (_quantize(scheme="fp8"), Target(runtime="torch"), "cpu", ["recipe", "steps", 0, "params", "scheme"],
         "fp8 tensor cores"),
        (_quantize(scheme="int4_weight_only"), Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "params", "scheme"], "cuda only"),
        (_quantize(scheme="int8_dynamic", target_fidelity=0.99), Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "params", "target_fidelity"], "ONNX quantizer"),
        ([{"technique": "prune", "params": {"structure": "heads", "sparsity": 0.25}}], Target(runtime="torch"), "cpu",
         ["recipe", "steps", 0, "params", "structure"], "different widths"),
        ([{"technique": "prune", "params": {"structure": "neurons", "sparsity": 0.25}}], Target(runtime="torch"),
         "cpu", ["recipe", "steps", 0, "params", "structure"], "scope 'per_layer'"),
    ],
)
def test_target_problems_name_the_field_and_the_fix(steps, target, device, loc, needle):
    """Each case has exactly one problem; a per-layer neuron pruning, for one, is fine."""
    problems = target_problems(steps, target, device)
    assert [problem["loc"] for problem in problems] == [loc]
    assert needle in problems[0]["msg"]


def test_a_recipe_that_cannot_build_the_target_fails_before_any_work(tiny_models, tmp_path):
    steps = [{"technique": "cluster", "params": {"bits": 4}}]
    with pytest.raises(RecipeError, match="cannot build the torch target"):
        _run(tiny_models["encoder"], tmp_path, steps)
    assert not (tmp_path / "work" / "steps").exists()


def test_neurons_pruned_per_layer_keep_a_torch_target_possible():
    steps = [{"technique": "prune", "params": {"structure": "neurons", "sparsity": 0.25, "scope": "per_layer"}}]
    assert target_problems(steps, Target(runtime="torch"), "cpu") == []
    heads = [{"technique": "prune", "params": {"structure": "heads"}}]
    assert target_problems(heads, Target(runtime="executorch"), "cpu") == []  # torch.export takes any widths


def test_embeddings_false_leaves_the_lookup_table_in_full_precision(tiny_models, tmp_path):
    steps = [{"technique": "quantize", "params": {"scheme": "int8_weight_only", "embeddings": False}}]
    report = _run(tiny_models["encoder"], tmp_path, steps).report
    assert report["steps"][0]["details"]["embeddings_quantized"] is False
