"""Every technique, every preset and every torch target as a cuda job on the tiny models: nothing may
mix a CPU tensor into the model's work, each step says where its parts ran, and the result matches
the same job on the CPU within noise."""

import pytest

from tests.engine.conftest import FAST_EVAL, LABELLED_ROWS
from tests.factories import TINY_KINDS, build_tiny_causal_lm, build_tiny_model
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.presets import PRESETS
from workers.engine.recipe import Recipe

RECOVER = {"epochs": 1, "augment": "none"}
TECHNIQUE_STEPS = {
    "distill-layers": [{"technique": "distill", "params": {"student_layers": 1, "epochs": 1}}],
    "distill-width": [{"technique": "distill", "params": {"student_width": 0.5, "epochs": 1}}],
    "prune-unstructured-wanda": [{"technique": "prune", "params": {
        "structure": "unstructured", "sparsity": 0.5, "importance": "activation", "recover": RECOVER}}],
    "prune-2:4-gradient": [{"technique": "prune", "params": {"structure": "2:4", "importance": "gradient"}}],
    "prune-neurons-gradient": [{"technique": "prune", "params": {
        "structure": "neurons", "sparsity": 0.25, "importance": "gradient", "recover": RECOVER}}],
    "prune-heads-activation": [{"technique": "prune", "params": {
        "structure": "heads", "sparsity": 0.5, "importance": "activation"}}],
    "low_rank": [{"technique": "low_rank", "params": {"rank_fraction": 0.5, "recover": RECOVER}}],
    "quantize-smoothed-static": [{"technique": "quantize", "params": {"scheme": "int8_static", "smooth_alpha": 0.5}}],
    "quantize-fallback": [{"technique": "quantize", "params": {"scheme": "int8_dynamic", "target_fidelity": 0.999}}],
    "cluster-gptq": [{"technique": "cluster", "params": {"bits": 4}}, {"technique": "huffman", "params": {}}],
}
TORCH_TARGET_SCHEMES = ("bf16", "fp16", "int8_weight_only", "int8_dynamic", "int4_weight_only", "fp8")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-models")
    models = {kind: build_tiny_model(kind, root / kind, hidden_size=64) for kind in TINY_KINDS}
    return models | {"llama": build_tiny_causal_lm("llama", root / "llama")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("gpu-data") / "rows.jsonl"
    rows = LABELLED_ROWS * 6  # enough texts for calibration, importance and a few training batches
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _run(model_dir, dataset, tmp_path, steps, device, target=None):
    request = PipelineRequest(
        model_dir=model_dir, recipe=Recipe.from_dict({"steps": steps}), dataset_path=dataset, device=device,
        target=target or {"runtime": "onnxruntime", "device": "cpu"},
        work_dir=tmp_path / device / "work", output_dir=tmp_path / device / "out", eval=FAST_EVAL,
    )
    return run_pipeline(request, lambda stage, fraction: None).report


def _fidelity(report):
    return report["fidelity"]["metrics"][report["fidelity"]["primary_metric"]]


# Every technique on the encoder; the classifier (labels, logits) through the two that train on them.
CASES = [("encoder", name) for name in sorted(TECHNIQUE_STEPS)] + [
    ("classifier", "distill-layers"), ("classifier", "prune-neurons-gradient"),
]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_every_technique_runs_on_cuda_and_matches_the_cpu(models, dataset, tmp_path, kind, name):
    steps = TECHNIQUE_STEPS[name]
    on_cuda = _run(models[kind], dataset, tmp_path, steps, "cuda")
    on_cpu = _run(models[kind], dataset, tmp_path, steps, "cpu")
    assert on_cuda["job"]["device"] == "cuda"
    assert any("cuda" in step["placement"].values() for step in on_cuda["steps"]) or name.startswith("quantize")
    # Training order, TF32 and kernel choice differ between devices: close, not equal.
    assert _fidelity(on_cuda) == pytest.approx(_fidelity(on_cpu), abs=0.02)


@pytest.mark.parametrize("preset", [preset.name for preset in PRESETS])
def test_every_preset_runs_on_cuda(models, dataset, tmp_path, preset):
    """The llm-* presets on a tiny Llama (llm-compressor onloads each layer to the GPU); the rest on the encoder."""
    chosen = next(p for p in PRESETS if p.name == preset)
    steps = Recipe.from_dict(chosen.recipe).to_dict()["steps"]
    for step in steps:  # the tiny run keeps the recipe's shape, with a short training
        if step["technique"] == "distill":
            step["params"] |= {"augment_copies": 2, "epochs": 1}
        if "recover" in step["params"]:
            step["params"]["recover"] |= {"augment_copies": 2, "epochs": 1}
    model = models["llama" if chosen.task == "text-generation" else "encoder"]
    report = _run(model, dataset, tmp_path, steps, "cuda", chosen.target.model_dump())
    assert report["job"]["device"] == "cuda" and _fidelity(report) > 0.3
    assert report["job"]["target"] == chosen.target.model_dump()


@pytest.mark.parametrize("scheme", TORCH_TARGET_SCHEMES)
def test_torch_cuda_targets_are_measured_on_the_gpu(models, dataset, tmp_path, scheme):
    target = {"runtime": "torch", "device": "cuda"}
    steps = [{"technique": "quantize", "params": {"scheme": scheme}}]
    report = _run(models["encoder"], dataset, tmp_path, steps, "cuda", target)
    assert report["original"]["latency"]["device"] == report["result"]["latency"]["device"] == "cuda"
    assert report["result"]["runtime"] == "pytorch" and _fidelity(report) > 0.98
    # The job's peak covers every step's.
    assert report["job"]["peak_gpu_memory_mb"] >= report["steps"][0]["peak_gpu_memory_mb"] > 0
