"""The quantize handler on its own: ONNX export, weight counting, and layer groups kept in fp32."""

from pathlib import Path

import onnx
import pytest

from workers.engine.errors import EngineUserError
from workers.engine.export.onnx import count_onnx_parameters
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize import QuantizeConfig, apply_quantize

TASK_BY_KIND = {"encoder": "feature-extraction", "classifier": "text-classification", "causal-lm": "text-generation"}


def quantize(model_dir: Path, kind: str, work_dir: Path, **params) -> tuple[ModelState, ModelState]:
    task = TASK_BY_KIND[kind]
    model = load_model(model_dir, task)
    state = ModelState(task=task, config_dir=model_dir, torch_model=model)
    context = StepContext(work_dir=work_dir, device="cpu", tokenizer=load_tokenizer(model_dir), sequence_length=128)
    return state, apply_quantize(QuantizeConfig(scheme="int8_dynamic", **params), state, context)


def float_matmuls_of(path: Path) -> set[str]:
    """Names of MatMul/Gemm nodes that still multiply by an fp32 weight."""
    model = onnx.load(str(path))
    floats = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    return {
        node.name for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and any(name in floats for name in node.input)
    }


def test_parameter_count_ignores_scales_and_matches_torch(tiny_models, tmp_path):
    before, after = quantize(tiny_models["classifier"], "classifier", tmp_path)
    assert after.format == "onnx" and after.torch_model is None
    fp32 = count_onnx_parameters(onnx.load(str(tmp_path / "model_fp32.onnx")))
    int8 = count_onnx_parameters(onnx.load(str(after.onnx_path)))
    # Quantizing changes how weights are stored, not how many there are. The export may store
    # equal tensors once (fresh LayerNorm weights are all ones), hence at most the torch count.
    assert fp32 == int8
    assert 0.9 * sum(p.numel() for p in before.torch_model.parameters()) < fp32 <= sum(
        p.numel() for p in before.torch_model.parameters()
    )


@pytest.mark.parametrize("kind, node_fragment", [("encoder", "/output/dense/"), ("causal-lm", "/mlp/c_proj/")])
def test_keep_fp32_leaves_the_ffn_output_unquantized(tiny_models, tmp_path, kind, node_fragment):
    _, default = quantize(tiny_models[kind], kind, tmp_path / "default")
    _, kept = quantize(tiny_models[kind], kind, tmp_path / "kept", keep_fp32=["ffn_output"])
    assert float_matmuls_of(default.onnx_path) == set()
    kept_nodes = float_matmuls_of(kept.onnx_path)
    assert len(kept_nodes) == 2  # one per layer of the tiny models
    assert all(node_fragment in name and "attention" not in name for name in kept_nodes)
    assert kept.onnx_path.stat().st_size > default.onnx_path.stat().st_size


def test_keep_fp32_on_an_unmapped_architecture_is_a_user_error(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr("workers.engine.techniques.quantize.layer_group_pattern", lambda model_type, group: None)
    with pytest.raises(EngineUserError, match="not mapped for model_type 'bert'"):
        quantize(tiny_models["encoder"], "encoder", tmp_path, keep_fp32=["ffn_input"])
