"""The low_rank technique: ranks, layers left whole, GPT-2's transposed Conv1D, recipe validation, and
a [low_rank, quantize] pipeline run."""

import copy
import logging
import re
from pathlib import Path

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from tests.engine.conftest import FAST_EVAL
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.model_folder import inspect_model_folder
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe, RecipeError
from workers.engine.registry import list_techniques
from workers.engine.state import ModelState, StepContext
from workers.engine.name_patterns import TASK_HEAD_PATTERNS
from workers.engine.techniques.low_rank import LowRankConfig, LowRankLinear, apply_low_rank

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Please call me back when you have a minute."]


def load_state(model_dir: Path) -> ModelState:
    task = inspect_model_folder(model_dir).task
    return ModelState(task=task, config_dir=model_dir, torch_model=load_model(model_dir, task))


def low_rank(state: ModelState, work_dir: Path, progress: list[float] | None = None, **params) -> ModelState:
    context = StepContext(
        work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(state.config_dir), sequence_length=128,
        on_progress=(progress.append if progress is not None else lambda fraction: None),
    )
    return apply_low_rank(LowRankConfig(**params), state, context)


def outputs(model: torch.nn.Module, model_dir: Path) -> torch.Tensor:
    """last_hidden_state for an encoder, logits otherwise."""
    encoded = load_tokenizer(model_dir)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(**encoded)
    return result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits


def give_decaying_spectra(model: torch.nn.Module) -> None:
    """Sets each body layer's singular values to s0 * 2^-k, keeping its singular vectors. Random
    weights have flat spectra, where no rank that saves parameters keeps the outputs close; with this
    spectrum the first r values hold ~1 - 4^-r of the energy, so energy 0.9999 gives rank 7."""
    heads = [re.compile(pattern) for pattern in TASK_HEAD_PATTERNS]
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, Conv1D)) and not any(head.search(name) for head in heads):
                U, S, Vh = torch.linalg.svd(module.weight, full_matrices=False)
                spectrum = S[0] * 0.5 ** torch.arange(S.numel(), dtype=S.dtype)
                module.weight.copy_(U @ torch.diag(spectrum) @ Vh)


def low_rank_layers(model: torch.nn.Module) -> dict[str, LowRankLinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LowRankLinear)}


def relative_error(reference: torch.Tensor, result: torch.Tensor) -> float:
    # Stricter than a mean cosine: the residual stream keeps even a wrongly oriented layer's outputs
    # at cosine ~0.98, while the right one stays below 0.5% error.
    return ((result - reference).norm() / reference.norm()).item()


def test_rank_fraction_factorises_the_body_and_leaves_the_heads_whole(tiny_models, tmp_path, caplog):
    state = load_state(tiny_models["classifier"])
    before = sum(p.numel() for p in state.torch_model.parameters())
    progress: list[float] = []
    with caplog.at_level(logging.INFO, logger="workers.engine.techniques.low_rank"):
        model = low_rank(state, tmp_path, progress, rank_fraction=0.25).torch_model

    factorised = low_rank_layers(model)
    # Every Linear of the two encoder layers: query, key, value, attention output, intermediate, output.
    assert len(factorised) == 12 and all(name.startswith("bert.encoder.layer.") for name in factorised)
    for module in factorised.values():
        rank = round(0.25 * min(module.in_features, module.out_features))
        assert module.down.weight.shape == (rank, module.in_features)
        assert module.up.weight.shape == (module.out_features, rank)
        assert module.down.bias is None and module.up.bias is not None
    assert type(model.classifier) is torch.nn.Linear and type(model.bert.pooler.dense) is torch.nn.Linear
    assert sum(p.numel() for p in model.parameters()) < before
    assert torch.isfinite(outputs(model, state.config_dir)).all()
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert "factorised 12 layers, kept 2 whole" in caplog.text


def test_high_energy_keeps_the_outputs_close_and_low_energy_keeps_less(tiny_models, tmp_path):
    model_dir = tiny_models["encoder"]
    high, low = load_state(model_dir), load_state(model_dir)
    for state in (high, low):
        give_decaying_spectra(state.torch_model)
    original = outputs(copy.deepcopy(high.torch_model), model_dir)

    high_layers = low_rank_layers(low_rank(high, tmp_path, energy=0.9999).torch_model)
    low_layers = low_rank_layers(low_rank(low, tmp_path, energy=0.5).torch_model)
    assert len(high_layers) == len(low_layers) == 12
    assert {module.rank for module in high_layers.values()} == {7}
    assert {module.rank for module in low_layers.values()} == {1}
    assert relative_error(original, outputs(high.torch_model, model_dir)) < 0.01


def test_a_layer_that_would_not_shrink_is_left_whole(tiny_models, tmp_path):
    # Rank 16 of a 32x32 layer holds 16 * 64 = 32 * 32 parameters: no gain, so it stays whole, while
    # the 32x64 FFN layers (16 * 96 < 32 * 64) are factorised.
    model = low_rank(load_state(tiny_models["encoder"]), tmp_path, rank_fraction=0.5).torch_model
    layer = model.encoder.layer[0]
    assert type(layer.attention.self.query) is torch.nn.Linear
    assert type(layer.attention.output.dense) is torch.nn.Linear
    assert isinstance(layer.intermediate.dense, LowRankLinear) and layer.intermediate.dense.rank == 16
    assert isinstance(layer.output.dense, LowRankLinear)

    state = load_state(tiny_models["encoder"])
    before = sum(p.numel() for p in state.torch_model.parameters())
    model = low_rank(state, tmp_path, rank_fraction=0.9).torch_model
    assert low_rank_layers(model) == {}
    assert sum(p.numel() for p in model.parameters()) == before


def test_gpt2_conv1d_layers_are_factorised_in_the_right_orientation(tiny_models, tmp_path):
    model_dir = tiny_models["causal-lm"]
    state = load_state(model_dir)
    give_decaying_spectra(state.torch_model)
    original = outputs(copy.deepcopy(state.torch_model), model_dir)
    model = low_rank(state, tmp_path, energy=0.9999).torch_model

    assert not any(isinstance(module, Conv1D) for module in model.modules())
    assert len(low_rank_layers(model)) == 8  # c_attn, attn.c_proj, c_fc, mlp.c_proj in each of 2 blocks
    c_attn = model.transformer.h[0].attn.c_attn  # Conv1D(nf=96, nx=32): 32 in, 96 out
    assert (c_attn.in_features, c_attn.out_features) == (32, 96)
    assert c_attn.down.weight.shape == (7, 32) and c_attn.up.weight.shape == (96, 7)
    # The LM head stays whole and still tied to the input embeddings.
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight is model.transformer.wte.weight
    logits = outputs(model, model_dir)
    assert torch.isfinite(logits).all()
    # A transposed square layer (c_proj) would keep the shapes and wreck the outputs.
    assert relative_error(original, logits) < 0.01


def test_low_rank_then_quantize_runs_end_to_end(tiny_models, tmp_path):
    recipe = Recipe.from_dict({
        "steps": [
            {"technique": "low_rank", "params": {"rank_fraction": 0.25}},
            {"technique": "quantize", "params": {"scheme": "int8_dynamic"}},
        ]
    })
    # Fewer samples and shorter inputs than FAST_EVAL: this test checks the steps, not the figures.
    small_eval = FAST_EVAL | {
        "max_samples": 16, "sequence_length": 32, "energy_repeats": 2, "energy_inferences_per_run": 32,
    }
    request = PipelineRequest(
        model_dir=tiny_models["encoder"], recipe=recipe, work_dir=tmp_path / "work", output_dir=tmp_path / "out",
        eval=small_eval,
    )
    report = run_pipeline(request, lambda stage, fraction: None).report
    assert [step["technique"] for step in report["steps"]] == ["low_rank", "quantize"]
    assert report["steps"][0]["params"]["rank_fraction"] == 0.25
    assert report["result"]["num_parameters"] < report["original"]["num_parameters"]
    assert 0.0 <= report["fidelity"]["metrics"]["cosine_mean"] <= 1.0


# --- Recipe validation ---

def errors_of(params: dict) -> list[dict]:
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict({"steps": [{"technique": "low_rank", "params": params}]})
    return caught.value.errors


@pytest.mark.parametrize("params", [{}, {"rank_fraction": 0.5, "energy": 0.9}, {"skip": []}])
def test_exactly_one_of_rank_fraction_or_energy(params):
    [error] = errors_of(params)
    assert error["loc"] == ["recipe", "steps", 0, "params"]
    assert error["msg"] == "give exactly one of rank_fraction or energy"


@pytest.mark.parametrize(
    "params, field",
    [
        ({"rank_fraction": 0.0}, "rank_fraction"),
        ({"rank_fraction": 1.0}, "rank_fraction"),
        ({"energy": 0.0}, "energy"),
        ({"energy": 1.5}, "energy"),
        ({"energy": "0.9"}, "energy"),  # strict: a string is not a number
    ],
)
def test_out_of_range_values_name_the_field(params, field):
    [error] = errors_of(params)
    assert error["loc"] == ["recipe", "steps", 0, "params", field]


def test_a_bad_skip_pattern_is_named():
    [error] = errors_of({"energy": 0.9, "skip": ["encoder", "layer.(0"]})
    assert error["loc"] == ["recipe", "steps", 0, "params", "skip"]
    assert "'layer.(0'" in error["msg"]


def test_low_rank_is_listed_and_round_trips():
    [entry] = [item for item in list_techniques() if item["name"] == "low_rank"]
    assert entry["description"] and entry["input_format"] == entry["output_format"] == "torch"
    recipe = Recipe.from_dict({"steps": [{"technique": "low_rank", "params": {"energy": 0.95}}]})
    data = recipe.to_dict()
    assert data["steps"][0]["params"] == {
        "rank_fraction": None, "energy": 0.95, "skip": list(TASK_HEAD_PATTERNS), "time_limit_seconds": None,
        "recover": None,
    }
    assert Recipe.from_dict(data) == recipe
