"""Exports a transformers model to one ONNX file and counts an ONNX graph's weights.

Uses the legacy TorchScript exporter (dynamo=False, opset 17): on torch 2.13 the dynamo exporter
needs onnxscript, which the service does not ship.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from workers.engine.architectures.task_io import FORWARD_KWARGS_BY_TASK, OUTPUT_BY_TASK
from workers.engine.architectures.tasks import Task
from workers.engine.errors import EngineUserError

OPSET = 17
# A protobuf cannot exceed 2 GiB, and the package promises a single self-contained file.
SINGLE_FILE_MAX_BYTES = 2 * 1024**3 - 64 * 1024**2
# Relative to the output's largest magnitude: float reordering gives ~1e-6; a wrong graph gives ~1.
EXPORT_CHECK_TOLERANCE = 1e-3

# Ops whose inputs at these positions are quantization scales or zero points, not weights.
_QUANT_PARAM_INPUTS = {
    "DequantizeLinear": {1, 2},
    "QuantizeLinear": {1, 2},
    "DynamicQuantizeMatMul": {2, 3},
    "MatMulInteger": {2, 3},
    "MatMulIntegerToFloat": {2, 3, 4, 5},
    "DynamicQuantizeLSTM": {8, 9, 10, 11},
}
_WEIGHT_DTYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
}


class _NamedInputs(torch.nn.Module):
    """Gives the exporter a forward with plain named tensors in and the task's one tensor out."""

    def __init__(self, model: torch.nn.Module, task: Task, input_names: list[str]):
        super().__init__()
        self.model = model
        self.output_name = OUTPUT_BY_TASK[task]
        self.forward_kwargs = FORWARD_KWARGS_BY_TASK[task]
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.input_names, tensors, strict=True))
        return getattr(self.model(**inputs, **self.forward_kwargs), self.output_name)


def _dummy_inputs(input_names: list[str], vocab_size: int, batch: int, length: int) -> dict[str, torch.Tensor]:
    ids = (torch.arange(batch * length).reshape(batch, length) * 7 + 3) % vocab_size
    mask = torch.ones(batch, length, dtype=torch.long)
    # A padded row matters: with an all-ones mask transformers skips building the mask, and the
    # trace would bake that shortcut into the graph.
    mask[-1, length // 2 :] = 0
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: tensors[name] for name in input_names}


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Exports attention as plain MatMul/Add/Softmax. The exporter's SDPA translation wraps every
    attention score in IsNaN/Where, which took ~30% of the int8 run time of MiniLM at batch 32 x 128
    (410 ms vs 244 ms with eager attention)."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_onnx(model: torch.nn.Module, task: Task, input_names: list[str], path: Path) -> Path:
    """Writes `path` (dynamic batch and sequence axes) and checks it against torch on another shape.

    The model is moved to the CPU: the exporter traces there, whatever device evaluation used.
    """
    if parameter_bytes(model) > SINGLE_FILE_MAX_BYTES:
        raise EngineUserError("The model is too large to export as a single ONNX file (limit: 2 GiB of weights).")
    model = model.to("cpu").eval()
    wrapper = _NamedInputs(model, task, input_names).eval()
    vocab_size = int(model.config.vocab_size)
    sample = _dummy_inputs(input_names, vocab_size, batch=2, length=8)
    output_name = OUTPUT_BY_TASK[task]
    # Classifier logits are (batch, labels); the other outputs keep a sequence axis.
    output_axes = {0: "batch"} if task == "text-classification" else {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), eager_attention(model):
        torch.onnx.export(
            wrapper,
            tuple(sample.values()),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in input_names}, output_name: output_axes},
            do_constant_folding=True,
        )
    # The export switches the wrapper back to its previous mode; keep dropout off for later steps.
    wrapper.eval()
    model.eval()
    _check_export(wrapper, input_names, vocab_size, path)
    return path


def _check_export(wrapper: torch.nn.Module, input_names: list[str], vocab_size: int, path: Path) -> None:
    inputs = _dummy_inputs(input_names, vocab_size, batch=3, length=11)
    with torch.no_grad():
        expected = wrapper(*inputs.values()).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})[0]
    mask = inputs["attention_mask"].numpy().astype(bool) if expected.ndim == 3 else np.ones(expected.shape[0], bool)
    error = np.abs(expected[mask] - actual[mask]).max()
    scale = max(float(np.abs(expected[mask]).max()), 1e-6)
    if error > EXPORT_CHECK_TOLERANCE * scale:
        raise RuntimeError(f"The ONNX export disagrees with torch (max abs error {error:.3g}); refusing to use it.")


def count_onnx_parameters(model: onnx.ModelProto) -> int:
    """Weight elements in the initializers: float or integer-quantized tensors, without scales,
    zero points, or the int64 shape and index constants the exporter adds.

    Equal tensors may be stored once (the exporter deduplicates, e.g. freshly initialised LayerNorm
    weights), so this counts what the file holds, which can be below the torch parameter count.
    Compact encodings (export.compact_storage) count their weights once: a clustered tensor by its
    indices (not its codebook), a sparse one by its stored nonzero values (not its bitmask).
    """
    names = {init.name for init in model.graph.initializer}
    excluded = {
        node.input[index]
        for node in model.graph.node
        for index in _QUANT_PARAM_INPUTS.get(node.op_type, ())
        if index < len(node.input)
    }
    # Per-channel weight scales feed a plain Mul, so they are also recognised by onnxruntime's
    # naming: W_quantized comes with W_scale and W_zero_point.
    quantized = {name.removesuffix("_quantized") for name in names if name.endswith("_quantized")}
    excluded |= {
        name
        for name in names
        for suffix in ("_scale", "_zero_point")
        if name.endswith(suffix) and name.removesuffix(suffix) in quantized
    }
    excluded |= {
        name for name in names
        if name.endswith((".codebook", ".mask")) or name.startswith("compact_storage.")
    }
    return sum(
        int(np.prod(init.dims, dtype=np.int64))
        for init in model.graph.initializer
        if init.name not in excluded and init.data_type in _WEIGHT_DTYPES
    )
