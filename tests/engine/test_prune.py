"""The prune technique: sparsity and 2:4 patterns, physical head/neuron removal on BERT and GPT-2,
reloading (plain transformers and compresso's loader), ONNX export, data-aware importance, params."""

import copy
import json
import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError
from transformers import DistilBertConfig, DistilBertModel
from transformers.pytorch_utils import Conv1D

from tests.factories import SAMPLE_TEXTS
from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.config_folder import PRUNED_SHAPES_FILE
from workers.engine.errors import EngineUserError
from workers.engine.export.onnx import export_onnx
from workers.engine.loading import load_model, load_tokenizer, model_input_names
from workers.engine.model_folder import inspect_model_folder
from workers.engine.pruned_model import as_out_in, load_pruned_model, save_pruned_model
from workers.engine.state import ModelState, StepContext
from workers.engine.name_patterns import TASK_HEAD_PATTERNS
from workers.engine.techniques.prune import PruneConfig
from workers.engine.techniques.prune.handler import apply_prune

TEXTS = SAMPLE_TEXTS[:6]


def load_state(model_dir: Path) -> ModelState:
    task = inspect_model_folder(model_dir).task
    return ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))


def context_for(state: ModelState, work_dir: Path, progress: list[float] | None = None, texts=TEXTS) -> StepContext:
    return StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(state.config_dir), sequence_length=32,
        calibration_texts=list(texts), on_progress=(progress.append if progress is not None else lambda f: None),
    )


def prune(state: ModelState, work_dir: Path, **params) -> tuple[ModelState, dict]:
    context = context_for(state, work_dir)
    return apply_prune(PruneConfig(**params), state, context), context.details


def outputs(model: torch.nn.Module, model_dir: Path) -> torch.Tensor:
    """last_hidden_state for an encoder, logits otherwise."""
    encoded = load_tokenizer(model_dir)(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(**encoded)
    return result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits


def body_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """(out, in) weights of the Linear/Conv1D layers outside the task heads."""
    heads = [re.compile(pattern) for pattern in TASK_HEAD_PATTERNS]
    return {
        name: as_out_in(module, module.weight.detach())
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and not any(head.search(name) for head in heads)
    }


@pytest.fixture(autouse=True)
def one_timing_repeat(monkeypatch):
    # The latency figures are checked for presence, not value; one repeat keeps the file fast.
    monkeypatch.setattr("workers.engine.techniques.prune.handler.LATENCY_REPEATS", 1)


# --- unstructured and 2:4 ---

@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_unstructured_hits_the_sparsity_and_leaves_heads_and_embeddings_alone(tiny_models, tmp_path, scope, caplog):
    state = load_state(tiny_models["classifier"])
    original = copy.deepcopy(state.torch_model)
    progress: list[float] = []
    with caplog.at_level(logging.INFO, logger="workers.engine.techniques.prune"):
        context = context_for(state, tmp_path, progress)
        config = PruneConfig(structure="unstructured", sparsity=0.3, scope=scope)
        model = apply_prune(config, state, context).torch_model

    weights = body_weights(model)
    assert len(weights) == 12
    zeros = {name: int((weight == 0).sum()) for name, weight in weights.items()}
    total = sum(weight.numel() for weight in weights.values())
    if scope == "global":
        assert sum(zeros.values()) == round(0.3 * total)
        assert len(set(zeros.values())) > 2  # layers lose different amounts
    else:
        assert all(zeros[name] == round(0.3 * weight.numel()) for name, weight in weights.items())
    for name in ("classifier", "bert.pooler.dense", "bert.embeddings.word_embeddings"):
        assert torch.equal(model.get_submodule(name).weight, original.get_submodule(name).weight)
    details = context.details
    assert details["nonzero_parameters_before"] - details["nonzero_parameters_after"] == sum(zeros.values())
    assert details["parameters_before"] == details["parameters_after"]
    assert set(details["skipped_layers"]) == {"bert.pooler.dense", "classifier"}
    json.dumps(details)  # the report stores it as JSON
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert "zeroed" in caplog.text


@pytest.mark.parametrize("kind", ["encoder", "causal-lm"])
def test_two_four_zeroes_two_of_every_four_inputs(tiny_models, tmp_path, kind):
    state = load_state(tiny_models[kind])
    model, details = prune(state, tmp_path, structure="2:4")
    for weight in body_weights(model.torch_model).values():
        groups = (weight == 0).reshape(weight.shape[0], -1, 4).sum(-1)
        assert (groups == 2).all()
    assert details["sparsity"] == 0.5 and details["sparsity_of_pruned_layers"] == 0.5
    assert torch.isfinite(outputs(model.torch_model, state.config_dir)).all()


# --- neurons and heads ---

@pytest.mark.parametrize("kind", ["classifier", "causal-lm"])
@pytest.mark.parametrize("structure", ["neurons", "heads"])
def test_structural_pruning_shrinks_the_tensors_and_still_runs(tiny_models, tmp_path, kind, structure):
    model_dir = tiny_models[kind]
    state = load_state(model_dir)
    expected_shape = outputs(state.torch_model, model_dir).shape
    result, details = prune(state, tmp_path, structure=structure, sparsity=0.5, scope="per_layer")
    model = result.torch_model

    if kind == "classifier":
        layer = model.bert.encoder.layer[0]
        if structure == "neurons":
            assert layer.intermediate.dense.weight.shape == (32, 32)
            assert layer.output.dense.weight.shape == (32, 32)
        else:
            assert layer.attention.self.query.weight.shape == (16, 32)
            assert layer.attention.output.dense.weight.shape == (32, 16)
            assert layer.attention.self.num_attention_heads == 1
    else:
        block = model.transformer.h[0]
        if structure == "neurons":
            assert block.mlp.c_fc.weight.shape == (32, 64) and block.mlp.c_proj.weight.shape == (64, 32)
        else:
            assert block.attn.c_attn.weight.shape == (32, 48) and block.attn.c_proj.weight.shape == (16, 32)
            assert block.attn.num_heads == 1
    result_outputs = outputs(model, model_dir)
    assert result_outputs.shape == expected_shape and torch.isfinite(result_outputs).all()
    assert details["parameters_after"] < details["parameters_before"]
    assert details["latency_ms_per_batch_before"] > 0 and details["speedup"] > 0
    assert 0 < details["flops_per_batch_after"] < details["flops_per_batch_before"]


def test_equal_neuron_counts_reload_with_plain_from_pretrained(tiny_models, tmp_path):
    for kind, field, kept in (("encoder", "intermediate_size", 48), ("causal-lm", "n_inner", 96)):
        state = load_state(tiny_models[kind])
        result, details = prune(state, tmp_path / kind, structure="neurons", sparsity=0.25, scope="per_layer")
        assert details["loadable_by_transformers"] is True
        config = json.loads((result.config_dir / "config.json").read_text())
        assert config[field] == kept
        assert not (result.config_dir / PRUNED_SHAPES_FILE).exists()
        result.torch_model.save_pretrained(tmp_path / kind / "saved")
        reloaded = load_model(tmp_path / kind / "saved", state.task)
        assert torch.equal(outputs(reloaded, state.config_dir), outputs(result.torch_model, state.config_dir))


@pytest.mark.parametrize("kind", ["classifier", "causal-lm"])
def test_unequal_layers_save_and_reload_through_compressos_loader(tiny_models, tmp_path, kind):
    model_dir = tiny_models[kind]
    state = load_state(model_dir)
    state, _ = prune(state, tmp_path / "heads", structure="heads", sparsity=0.25)
    state, details = prune(state, tmp_path / "neurons", structure="neurons", sparsity=0.4)
    assert len(set(details["heads_per_layer"])) == 2 and len(set(details["neurons_per_layer"])) == 2
    assert details["loadable_by_transformers"] is False
    shapes = json.loads((state.config_dir / PRUNED_SHAPES_FILE).read_text())
    assert [layer["attention_heads"] for layer in shapes["layers"]] == details["heads_per_layer"]

    folder = save_pruned_model(state.torch_model, tmp_path / "saved")
    reloaded = load_pruned_model(folder, state.task)
    assert torch.equal(outputs(reloaded, model_dir), outputs(state.torch_model, model_dir))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        # What the stored shapes are for: transformers alone cannot build this model...
        AUTO_CLASS_BY_TASK[state.task].from_pretrained(folder)
    # ...and the engine's own loading (a pruned upload, a later job) goes through them.
    assert torch.equal(outputs(load_model(folder, state.task), model_dir), outputs(state.torch_model, model_dir))


def test_pruned_model_exports_to_onnx_and_matches_torch(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    state = load_state(model_dir)
    state, _ = prune(state, tmp_path / "heads", structure="heads", sparsity=0.25)
    state, _ = prune(state, tmp_path / "neurons", structure="neurons", sparsity=0.4)
    tokenizer = load_tokenizer(model_dir)
    names = model_input_names(state.torch_model, tokenizer)
    path = export_onnx(state.torch_model, state.task, names, tmp_path / "model.onnx")

    encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: encoded[name].astype(np.int64) for name in names})[0]
    encoded_torch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = state.torch_model(**encoded_torch).last_hidden_state.numpy()
    mask = encoded["attention_mask"].astype(bool)
    np.testing.assert_allclose(actual[mask], expected[mask], atol=1e-4)


def test_every_layer_keeps_at_least_one_head(tiny_models, tmp_path):
    state = load_state(tiny_models["encoder"])
    result, details = prune(state, tmp_path, structure="heads", sparsity=0.9, scope="per_layer")
    assert details["heads_per_layer"] == [1, 1]
    assert details["kept_at_least_one_in"] == ["encoder.layer.0", "encoder.layer.1"]
    assert torch.isfinite(outputs(result.torch_model, state.config_dir)).all()


def test_skip_leaves_a_layer_whole(tiny_models, tmp_path):
    state = load_state(tiny_models["encoder"])
    _, details = prune(state, tmp_path, structure="neurons", sparsity=0.5, skip=[r"layer\.0$"])
    assert details["neurons_per_layer"][0] == 64 and details["neurons_per_layer"][1] < 64
    assert details["skipped_layers"] == ["encoder.layer.0"]


# --- data-aware importance ---

def silence_loud_neuron(model: torch.nn.Module) -> None:
    """Neuron 0 of layer 0 gets the largest weights in and out, and a bias that keeps its GELU
    output at exactly 0 on every input: magnitude ranks it first, while the data show it does nothing."""
    layer = model.encoder.layer[0]
    with torch.no_grad():
        layer.intermediate.dense.weight[0] *= 10
        layer.intermediate.dense.bias[0] = -1e4
        layer.output.dense.weight[:, 0] = 10.0


@pytest.mark.parametrize("importance", ["activation", "gradient"])
def test_data_aware_importance_removes_a_large_but_silent_neuron(tiny_models, tmp_path, importance):
    kept = {}
    for method in ("magnitude", importance):
        state = load_state(tiny_models["encoder"])
        silence_loud_neuron(state.torch_model)
        ffn_in = state.torch_model.encoder.layer[0].intermediate.dense
        marker = ffn_in.weight[0].clone()
        prune(state, tmp_path / method, structure="neurons", sparsity=0.25, scope="per_layer", importance=method)
        kept[method] = any(torch.equal(row, marker) for row in ffn_in.weight)
    assert kept == {"magnitude": True, importance: False}


@pytest.mark.parametrize("importance", ["activation", "gradient"])
def test_data_aware_unstructured_zeroes_the_silent_input(tiny_models, tmp_path, importance):
    state = load_state(tiny_models["encoder"])
    silence_loud_neuron(state.torch_model)
    column = state.torch_model.encoder.layer[0].output.dense.weight[:, 0]
    magnitude_state = copy.deepcopy(state)
    prune(magnitude_state, tmp_path / "m", structure="unstructured", sparsity=0.5, scope="per_layer")
    prune(state, tmp_path / "d", structure="unstructured", sparsity=0.5, scope="per_layer", importance=importance)
    assert (magnitude_state.torch_model.encoder.layer[0].output.dense.weight[:, 0] != 0).all()
    assert (column == 0).all()


def test_data_aware_importance_without_texts_says_what_to_do(tiny_models, tmp_path):
    state = load_state(tiny_models["encoder"])
    context = context_for(state, tmp_path, texts=[])
    with pytest.raises(EngineUserError, match="importance 'magnitude'"):
        apply_prune(PruneConfig(structure="unstructured", sparsity=0.5, importance="activation"), state, context)


# --- params ---

@pytest.mark.parametrize(
    "params, message",
    [
        ({"structure": "2:4", "sparsity": 0.3}, "2:4 pruning always removes half"),
        ({"structure": "neurons"}, "needs a sparsity"),
        ({"structure": "heads", "sparsity": 1.0}, "less than 1"),
        ({"structure": "unstructured", "sparsity": 0.5, "importance": "random"}, "magnitude"),
        ({"structure": "unstructured", "sparsity": 0.5, "skip": ["layer.(0"]}, "'layer.(0' is not a valid"),
        ({"structure": "unstructured", "sparsity": 0.5, "recover": {"epochs": 0}}, "greater than or equal to 1"),
        ({"structure": "unstructured", "sparsity": 0.5, "recovery": {}}, "Extra inputs"),
        ({"structure": "channels", "sparsity": 0.5}, "unstructured"),
    ],
)
def test_invalid_params_are_refused_with_a_clear_message(params, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        PruneConfig(**params)


def test_two_four_accepts_its_own_sparsity_and_round_trips():
    assert PruneConfig(structure="2:4", sparsity=0.5).fraction == 0.5
    config = PruneConfig(structure="heads", sparsity=0.25, importance="gradient")
    assert PruneConfig.model_validate(config.model_dump(mode="json")) == config


def test_structural_pruning_names_the_supported_model_types(tmp_path):
    model = DistilBertModel(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64)).eval()
    state = ModelState(task="feature-extraction", config_dir=tmp_path, torch_model=model)
    context = StepContext(work_dir=tmp_path, device="cpu", tokenizer=None, sequence_length=16)
    with pytest.raises(EngineUserError, match=r"model_type 'distilbert' \(supported: bert, gpt2, roberta\)"):
        apply_prune(PruneConfig(structure="heads", sparsity=0.5), state, context)
