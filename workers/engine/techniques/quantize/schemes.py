"""One builder per scheme: from the prepared fp32 graph and the selected layers to a quantized ONNX file.

Kernels come from onnxruntime (quantize_dynamic, quantize_static, MatMulNBitsQuantizer); rewrites.py
adds the few rewrites it does not offer (int8 embeddings per row, int8 weight-only, half storage).
"""

import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    HQQWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)

from workers.engine.evaluation.calibration import BatchReader
from workers.engine.evaluation.runners import Batch
from workers.engine.techniques.quantize.config import DEFAULT_GROUP_SIZE, QuantizeConfig
from workers.engine.techniques.quantize.layers import WeightLayer
from workers.engine.techniques.quantize.outliers import write_split
from workers.engine.techniques.quantize.rewrites import (
    quantize_embeddings_int8,
    quantize_matmuls_int8_weight_only,
    store_half,
)

# The 4-bit quantizer logs every node of the graph at INFO (thousands of lines per job).
logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@dataclass(frozen=True)
class BuildInputs:
    prepared: Path  # the fp32 export with Gemm rewritten as MatMul (layers.prepare_graph)
    layers: list[WeightLayer]  # the selected layers
    config: QuantizeConfig
    calibration: list[Batch]  # int8_static calibrates on these
    # Per MatMul node, the calibration peak of each input channel (for fallback "outliers")
    peaks: dict[str, np.ndarray] | None = None
    # int8_static after quantization-aware training: per activation tensor, the (scale, zero point)
    # it was trained with, which onnxruntime must use instead of calibrating its own.
    activation_qparams: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)


Builder = Callable[[BuildInputs, list[WeightLayer], list[WeightLayer], Path], None]


def _rewrite_embeddings(path: Path, embeddings: list[WeightLayer], output: Path) -> None:
    model = onnx.load(str(path))
    quantize_embeddings_int8(model, embeddings)
    onnx.save(model, str(output))


def _int8_dynamic(inputs: BuildInputs, matmuls: list[WeightLayer], embeddings: list[WeightLayer], output: Path) -> None:
    staged = output.with_name(f"{output.stem}.matmul.onnx")
    if matmuls:  # an empty nodes_to_quantize means "every node" to onnxruntime
        quantize_dynamic(
            inputs.prepared, staged,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=[layer.node for layer in matmuls],
            per_channel=inputs.config.per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    else:
        shutil.copyfile(inputs.prepared, staged)
    _rewrite_embeddings(staged, embeddings, output)
    staged.unlink()


def _int8_static(inputs: BuildInputs, matmuls: list[WeightLayer], embeddings: list[WeightLayer], output: Path) -> None:
    staged = output.with_name(f"{output.stem}.matmul.onnx")
    if matmuls:
        overrides = {
            tensor: [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}]
            for tensor, (scale, zero_point) in inputs.activation_qparams.items()
        }
        quantize_static(
            inputs.prepared, staged, BatchReader(inputs.calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=[layer.node for layer in matmuls],
            per_channel=inputs.config.per_channel,
            # u8 activations with s8 weights: the combination onnxruntime's x86 kernels are built for.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_CALIBRATION_METHODS[inputs.config.calibration_method or "percentile"],
            # One batch per calibration pass (despite its name, the option applies to every method):
            # the histogram calibrators (percentile, entropy) stack all collected batches into one
            # array, which fails when batches are padded to different lengths, and holding one
            # batch's activations at a time also bounds memory.
            # MatMul outputs stay fp32 (MatMulIntegerToFloat): quantizing them too, onnxruntime's default,
            # put the FFN output's pre-bias sum (range ~200 on MiniLM) on a uint8 grid, and held-out
            # fidelity fell to 0.938 from 0.990 without, at the same speed (263 vs 280 ms at batch 32).
            extra_options={
                "WeightSymmetric": True, "CalibStridedMinMax": 1, "TensorQuantOverrides": overrides,
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )
    else:
        shutil.copyfile(inputs.prepared, staged)
    _rewrite_embeddings(staged, embeddings, output)
    staged.unlink()


def _int8_weight_only(
    inputs: BuildInputs, matmuls: list[WeightLayer], embeddings: list[WeightLayer], output: Path
) -> None:
    model = onnx.load(str(inputs.prepared))
    quantize_matmuls_int8_weight_only(model, matmuls)
    quantize_embeddings_int8(model, embeddings)
    onnx.save(model, str(output))


def _others(model: onnx.ModelProto, chosen: list[WeightLayer]) -> list[str]:
    """Every MatMul/Gather not chosen: MatMulNBitsQuantizer takes exclusions, not a list to quantize."""
    names = {layer.node for layer in chosen}
    return [node.name for node in model.graph.node if node.op_type in ("MatMul", "Gather") and node.name not in names]


def _int4_weight_only(
    inputs: BuildInputs, matmuls: list[WeightLayer], embeddings: list[WeightLayer], output: Path
) -> None:
    config = inputs.config
    group_size = config.group_size or DEFAULT_GROUP_SIZE
    model = onnx.load(str(inputs.prepared))
    algorithm = config.algorithm or "rtn"
    if matmuls:
        if algorithm == "hqq":
            algo = HQQWeightOnlyQuantConfig(block_size=group_size, bits=4, op_types_to_quantize=("MatMul",))
        else:
            algo = DefaultWeightOnlyQuantConfig(
                block_size=group_size, is_symmetric=False, op_types_to_quantize=("MatMul",),
                quant_axes=(("MatMul", 0),),
            )
        quantizer = MatMulNBitsQuantizer(
            model, block_size=group_size, is_symmetric=False, nodes_to_exclude=_others(model, matmuls), algo_config=algo
        )
        quantizer.process()
        model = quantizer.model.model
    if embeddings:
        # GatherBlockQuantized: 4-bit tables in groups along the hidden axis, one group per scale.
        algo = DefaultWeightOnlyQuantConfig(
            block_size=group_size, is_symmetric=False, op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),)
        )
        quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=_others(model, embeddings), algo_config=algo)
        quantizer.process()
        model = quantizer.model.model
    onnx.save(model, str(output))


def _half(dtype: int) -> Builder:
    def build(inputs: BuildInputs, matmuls: list[WeightLayer], embeddings: list[WeightLayer], output: Path) -> None:
        model = onnx.load(str(inputs.prepared))
        store_half(model, [*matmuls, *embeddings], dtype)
        onnx.save(model, str(output))

    return build


BUILDERS: dict[str, Builder] = {
    "int8_dynamic": _int8_dynamic,
    "int8_static": _int8_static,
    "int8_weight_only": _int8_weight_only,
    "int4_weight_only": _int4_weight_only,
    "fp16": _half(onnx.TensorProto.FLOAT16),
    "bf16": _half(onnx.TensorProto.BFLOAT16),
}


def build(inputs: BuildInputs, output: Path, fallback: frozenset[str] = frozenset()) -> Path:
    """Writes `output` with every selected layer quantized by the scheme except those whose node is in
    `fallback`, which stay fp32 or, with config.fallback "weight_only", get int8 weights and fp32 compute.
    With config.fallback "outliers" they stay int8, with their outlier input channels computed apart."""
    if inputs.config.fallback == "outliers" and fallback:
        apart = [layer for layer in inputs.layers if layer.node in fallback and not layer.is_embedding]
        split_path = output.with_name(f"{output.stem}.apart.onnx")
        write_split(inputs.prepared, apart, inputs.peaks, inputs.config.channels_apart(), split_path)
        try:
            return build(dataclasses.replace(inputs, prepared=split_path), output)
        finally:
            split_path.unlink()
    layers = [layer for layer in inputs.layers if layer.node not in fallback]
    matmuls = [layer for layer in layers if not layer.is_embedding]
    embeddings = [layer for layer in layers if layer.is_embedding]
    BUILDERS[inputs.config.scheme](inputs, matmuls, embeddings, output)
    weight_only = [layer for layer in inputs.layers if layer.node in fallback and not layer.is_embedding]
    if weight_only and inputs.config.fallback == "weight_only":
        # The scheme's quantizer left these MatMuls alone, so their fp32 weights are still initializers.
        model = onnx.load(str(output))
        quantize_matmuls_int8_weight_only(model, weight_only)
        onnx.save(model, str(output))
    return output
