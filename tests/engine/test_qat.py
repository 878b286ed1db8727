"""Quantization-aware training in the quantize step: the fake quantizers reproduce onnxruntime's grids,
training lowers the quantized model's loss, and the trained ranges are the ones onnxruntime uses."""

import platform
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from pydantic import ValidationError

from tests.engine.test_quantize import CALIBRATION_TEXTS, TASK_BY_KIND, run_scheme
from workers.engine.evaluation.calibration import FidelityProbe, calibration_batches
from workers.engine.loading import load_model, load_tokenizer, model_input_names
from workers.engine.techniques.quantize import QuantizeConfig
from workers.engine.techniques.quantize.qat import ActivationFakeQuantizer, WeightFakeQuantizer, uint8_qparams
from workers.engine.techniques.quantize.rewrites import _symmetric_int8

QAT = {"max_steps": 60, "batch_size": 4, "lr": 3e-4, "augment": "none"}


def test_int8_weight_grid_is_onnxruntime_s():
    weight = torch.randn(48, 64) * torch.linspace(0.1, 3, 48)[:, None]
    quantized, scale = _symmetric_int8(weight.numpy(), axis=1)
    expected = quantized.astype(np.float32) * scale
    np.testing.assert_allclose(WeightFakeQuantizer(8, None)(weight).numpy(), expected, rtol=0, atol=1e-6)


def test_4bit_weight_grid_is_onnxruntime_s():
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    weight = torch.randn(8, 64) + 0.3
    rows = []
    for row in weight.numpy().reshape(-1, 32):  # groups of 32 along each row, as MatMulNBits blocks K
        quantized, scale, zero_point = DefaultWeightOnlyQuantizer.quant_slice_asymmetric(row[None, :])
        rows.append((quantized.astype(np.float32) - zero_point) * scale)
    expected = np.concatenate(rows).reshape(8, 64)
    np.testing.assert_allclose(WeightFakeQuantizer(4, 32)(weight).numpy(), expected, rtol=0, atol=1e-5)


def test_activation_grid_widens_to_hold_zero_and_passes_gradients():
    scale, zero_point = uint8_qparams(0.5, 2.0)  # all positive: the range starts at 0
    assert zero_point == 0 and scale == pytest.approx(2.0 / 255)
    x = torch.tensor([0.0, 0.013, 1.0, 2.0, 3.0], requires_grad=True)
    y = ActivationFakeQuantizer(scale, zero_point)(x)
    assert y[-1].item() == pytest.approx(2.0)  # clipped at the top of the range
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]  # straight through inside the range only
    dynamic = ActivationFakeQuantizer()(torch.tensor([-1.0, 0.0, 3.0]))
    assert dynamic[0].item() == pytest.approx(-1.0, abs=4 / 255) and dynamic[1].item() == 0.0


def _u8s8_kernels_exact() -> bool:
    """Whether onnxruntime's u8s8 MatMulInteger computes exactly what QAT simulates here. On x86 CPUs without
    VNNI its AVX2 kernel adds pairs of u8 x s8 products in int16, which saturates (onnxruntime's quantization
    docs say so, and suggest reduce_range or u8u8 there); the fake-quantized training does not model that.
    Measured on such a CPU (AMD EPYC, AVX2 only): the tiny encoder's int8_dynamic QAT reached 0.9915 against
    0.9921 untrained, where int8_static and 4-bit (no such kernel) still gained."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _quantization_ops(path) -> Counter:
    quantizing = ("Quantize", "Integer", "NBits", "BlockQuantized")
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node
                   if any(part in node.op_type for part in quantizing))


def _fidelity(model_dir, kind, onnx_path, tmp_path) -> float:
    model = load_model(model_dir, TASK_BY_KIND[kind])
    tokenizer = load_tokenizer(model_dir)
    batches = calibration_batches(tokenizer, CALIBRATION_TEXTS, 64, model_input_names(model, tokenizer))
    return FidelityProbe(model, TASK_BY_KIND[kind], batches, tmp_path / "probe")(onnx_path)


@pytest.mark.parametrize("scheme", ["int8_static", "int4_weight_only", "int8_dynamic"])
def test_qat_trains_then_ships_the_scheme_s_graph(tiny_models, tmp_path, scheme):
    model_dir = tiny_models["encoder"]
    plain, _ = run_scheme(model_dir, "encoder", tmp_path / "plain", scheme=scheme)
    trained, context = run_scheme(model_dir, "encoder", tmp_path / "qat", scheme=scheme, qat=QAT)
    qat = context.details["qat"]
    assert qat["steps"] == 60 and qat["final_loss"] < qat["initial_loss"]
    assert qat["layers_trained"] == context.details["layers_quantized"]
    assert context.placement["qat"] == "cpu"
    # The same kernels as without training: the trained graph quantizes the same layers.
    assert _quantization_ops(trained.onnx_path) == _quantization_ops(plain.onnx_path)
    trained_fidelity = _fidelity(model_dir, "encoder", trained.onnx_path, tmp_path)
    plain_fidelity = _fidelity(model_dir, "encoder", plain.onnx_path, tmp_path)
    if scheme == "int8_dynamic" and not _u8s8_kernels_exact():
        # Training cannot follow rounding it does not simulate: it must not cost more than noise.
        assert trained_fidelity > plain_fidelity - 0.005
    else:
        assert trained_fidelity > plain_fidelity


def test_int8_static_ships_the_activation_ranges_it_trained_with(tiny_models, tmp_path, monkeypatch):
    from workers.engine.techniques.quantize import handler

    results = []

    def train_and_keep(*args):  # the real training, with its result kept for the comparison below
        results.append(handler_train(*args))
        return results[-1]

    handler_train = handler.quantization_aware_training
    monkeypatch.setattr(handler, "quantization_aware_training", train_and_keep)
    _, context = run_scheme(tiny_models["encoder"], "encoder", tmp_path, scheme="int8_static", qat=QAT)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert context.details["qat"]["activation_ranges_fixed"] > 0
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    produced = {output: node for node in graph.node for output in node.output}
    # Query, key and value read one tensor: one QDQ pair, as in training, so fewer ranges than MatMuls.
    matmuls = [node for node in graph.node if node.op_type == "MatMul" and node.input[0] in produced
               and produced[node.input[0]].op_type == "DequantizeLinear"]
    tensors = {node.input[0] for node in matmuls}
    assert context.details["qat"]["activation_ranges_fixed"] == len(tensors) < len(matmuls)
    # Every range is the one training used: onnxruntime calibrated none of its own.
    trained = {(round(float(initializers[produced[name].input[1]]), 9), int(initializers[produced[name].input[2]]))
               for name in tensors}
    assert trained == {(round(scale, 9), zero_point) for scale, zero_point in results[0].activation_qparams.values()}


@pytest.mark.parametrize("params, message", [
    ({"scheme": "fp16", "qat": {}}, "qat only applies to scheme"),
    ({"scheme": "int8_dynamic", "qat": {}, "smooth_alpha": 0.5}, "smooth_alpha would change the grid"),
    ({"scheme": "int4_weight_only", "qat": {}, "algorithm": "hqq"}, "algorithm 'hqq' would change the grid"),
    ({"scheme": "int8_dynamic", "qat": {"epochs": 1, "max_steps": 3}}, "not both"),
])
def test_qat_params_that_cannot_work_are_refused(params, message):
    with pytest.raises(ValidationError, match=message):
        QuantizeConfig(**params)
