"""A job whose target runtime is executorch: the result ships as an XNNPACK-delegated .pte that
ExecuTorch's own runtime loads and runs, measured with that runtime; what it cannot take is refused
before any work."""

import zipfile

import numpy as np
import pytest
import torch

from tests.engine.conftest import FAST_EVAL
from workers.engine.errors import EngineUserError
from workers.engine.evaluation.runners import TorchRunner, tokenize
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.target import Target, target_problems

EXECUTORCH = {"runtime": "executorch", "device": "cpu"}


def _run(model_dir, tmp_path, steps, dataset=None):
    request = PipelineRequest(
        model_dir=model_dir, recipe=Recipe.from_dict({"steps": steps}), dataset_path=dataset, target=EXECUTORCH,
        work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=FAST_EVAL,
    )
    return run_pipeline(request, lambda stage, fraction: None)


@pytest.fixture(scope="module")
def int8_classifier_run(tiny_models, labelled_dataset, tmp_path_factory):
    steps = [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]
    return _run(tiny_models["classifier"], tmp_path_factory.mktemp("et-int8"), steps, labelled_dataset)


def test_int8_result_is_a_pte_measured_with_executorch(int8_classifier_run):
    report = int8_classifier_run.report
    assert report["job"]["target"] == EXECUTORCH
    assert (report["result"]["format"], report["result"]["runtime"]) == ("pte", "executorch")
    assert report["result"]["latency"]["runtime"] == "executorch"
    assert report["result"]["num_parameters"] == report["original"]["num_parameters"]
    step = report["steps"][0]
    assert step["format_after"] == "executorch" and step["details"]["max_batch"] == 32
    assert report["fidelity"]["metrics"]["top1_agreement"] >= 0.9
    assert {item["path"] for item in report["files"]} >= {"model.pte", "config.json", "tokenizer.json"}


def test_the_shipped_pte_runs_in_executorch_as_the_card_says(int8_classifier_run, tiny_models, tmp_path, monkeypatch):
    from executorch.runtime import Runtime

    with zipfile.ZipFile(int8_classifier_run.model_zip) as archive:
        archive.extractall(tmp_path)
    folder = tiny_models["classifier"]
    tokenizer = load_tokenizer(folder)
    batch = tokenize(tokenizer, ["A long and boring film.", "Fast delivery and good service, thanks."], None, 64)
    method = Runtime.get().load_program(str(tmp_path / "model.pte")).load_method("forward")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    got = method.execute([torch.from_numpy(batch[name]) for name in names])[0].numpy()
    want = TorchRunner(load_model(folder, "text-classification"), "text-classification", names, "cpu")(batch)
    assert got.shape == want.shape and (got.argmax(-1) == want.argmax(-1)).all()
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "library_name: executorch" in card
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own generated code
    assert np.isfinite(namespace["probabilities"]).all()


def test_a_recipe_without_quantize_ships_an_fp32_program_that_matches_torch(tiny_models, tmp_path):
    steps = [{"technique": "prune", "params": {"structure": "unstructured", "sparsity": 0.5}}]
    program = _run(tiny_models["encoder"], tmp_path / "executorch", steps).report
    assert program["result"]["format"] == "pte"
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=Recipe.from_dict({"steps": steps}),
        target={"runtime": "torch", "device": "cpu"}, work_dir=tmp_path / "torch" / "work",
        output_dir=tmp_path / "torch" / "out", eval=FAST_EVAL,
    )
    in_torch = run_pipeline(request, lambda stage, fraction: None).report
    # The same pruned model, run by XNNPACK in fp32 and by torch: the same outputs, to float rounding.
    assert program["fidelity"]["metrics"]["cosine_mean"] == pytest.approx(
        in_torch["fidelity"]["metrics"]["cosine_mean"], abs=1e-5)


def test_causal_lms_and_impossible_recipes_are_refused_before_any_work(tiny_models, tmp_path):
    steps = [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]
    with pytest.raises(EngineUserError, match="KV cache"):
        _run(tiny_models["causal-lm"], tmp_path, steps)
    with pytest.raises(RecipeError, match="cannot build the executorch target"):
        _run(tiny_models["encoder"], tmp_path, [{"technique": "cluster", "params": {"bits": 4}}])
    problems = target_problems(
        [{"technique": "quantize", "params": {"scheme": "int4_weight_only"}}], Target(runtime="executorch", device="cuda"),
        "cuda",
    )
    assert [problem["loc"] for problem in problems] == [["target", "device"], ["recipe", "steps", 0, "params", "scheme"]]
    static = [{"technique": "quantize", "params": {"scheme": "int8_static"}}]
    [problem] = target_problems(static, Target(runtime="executorch"), "cpu")
    assert problem["allowed"] == ["int8_dynamic"]
    assert not (tmp_path / "work" / "steps").exists()


def test_skip_leaves_the_named_layers_in_fp32(tiny_models, labelled_dataset, int8_classifier_run, tmp_path):
    skipping = {"technique": "quantize", "params": {"scheme": "int8_dynamic", "skip": [r"output\.dense$"]}}
    everything = int8_classifier_run.report  # the same model with every layer quantized
    report = _run(tiny_models["classifier"], tmp_path / "skip", [skipping], labelled_dataset).report
    details = report["steps"][0]["details"]
    assert details["left_layers"] and all(name.endswith("output.dense") for name in details["left_layers"])
    # The skipped layers really stay fp32 in the program: 4 bytes a weight instead of 1.
    dense = 64 * 32 * len(details["left_layers"])  # FFN output weights: intermediate 64 -> hidden 32 (factories)
    assert report["result"]["size_bytes"] - everything["result"]["size_bytes"] >= 2 * dense
