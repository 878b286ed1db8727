"""Graph rewrites onnxruntime's quantizers do not offer: int8 embeddings with one scale per row, int8
weight-only MatMuls (DequantizeLinear on an int8 initializer), and half-precision weights cast to fp32.

Why by hand: quantize_dynamic/quantize_static quantize a Gather's table with one scale per tensor,
and MatMulNBitsQuantizer packs Gather only at 4 bits and refuses 8-bit QDQ for MatMul. Each rewrite
is a few standard ops (Gather, Cast, Mul, DequantizeLinear) every runtime implements.
"""

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from workers.engine.techniques.quantize.layers import WeightLayer

_INT8_MAX = 127.0


def _symmetric_int8(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and fp32 scales, one scale per slice along `axis` (symmetric, so no zero point)."""
    peak = np.abs(values).max(axis=axis, keepdims=True)
    scale = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(values / scale), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return quantized, scale


def _take_initializer(graph: onnx.GraphProto, name: str) -> np.ndarray:
    for index, init in enumerate(graph.initializer):
        if init.name == name:
            del graph.initializer[index]
            return numpy_helper.to_array(init)
    raise KeyError(name)


def _replace_node(graph: onnx.GraphProto, name: str, new_nodes: list[onnx.NodeProto]) -> onnx.NodeProto:
    """Puts `new_nodes` where node `name` was (keeping the graph topologically sorted); returns the old node."""
    for index, node in enumerate(graph.node):
        if node.name == name:
            old = onnx.NodeProto()
            old.CopyFrom(node)
            del graph.node[index]
            for offset, new in enumerate(new_nodes):
                graph.node.insert(index + offset, new)
            return old
    raise KeyError(name)


def find_node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(node for node in graph.node if node.name == name)


def quantize_embeddings_int8(model: onnx.ModelProto, layers: list[WeightLayer]) -> None:
    """Gather(table) -> Gather(int8 table) * Gather(row scales): the table stays int8 in memory too."""
    graph = model.graph
    for layer in layers:
        node = find_node(graph, layer.node)
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
        if axis != 0:
            continue
        quantized, scale = _symmetric_int8(_take_initializer(graph, layer.weight), axis=1)
        q_name, s_name = f"{layer.weight}_quantized", f"{layer.weight}_scale"
        graph.initializer.extend([numpy_helper.from_array(quantized, q_name), numpy_helper.from_array(scale, s_name)])
        indices, output, base = node.input[1], node.output[0], layer.node
        _replace_node(graph, layer.node, [
            helper.make_node("Gather", [q_name, indices], [f"{base}_q"], name=f"{base}_quantized"),
            helper.make_node("Gather", [s_name, indices], [f"{base}_s"], name=f"{base}_scale"),
            helper.make_node("Cast", [f"{base}_q"], [f"{base}_f"], name=f"{base}_cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{base}_f", f"{base}_s"], [output], name=f"{base}_dequantize"),
        ])


def quantize_matmuls_int8_weight_only(model: onnx.ModelProto, layers: list[WeightLayer]) -> None:
    """MatMul(x, W) -> MatMul(x, DequantizeLinear(W_int8, scale per output column))."""
    graph = model.graph
    for layer in layers:
        node = find_node(graph, layer.node)
        quantized, scale = _symmetric_int8(_take_initializer(graph, layer.weight), axis=0)
        q_name, s_name, z_name = (f"{layer.weight}_quantized", f"{layer.weight}_scale", f"{layer.weight}_zero_point")
        graph.initializer.extend([
            numpy_helper.from_array(quantized, q_name),
            numpy_helper.from_array(scale.reshape(-1), s_name),
            numpy_helper.from_array(np.zeros(scale.size, np.int8), z_name),
        ])
        dequantized = f"{layer.node}_weight"
        node.input[1] = dequantized
        index = list(graph.node).index(node)
        graph.node.insert(index, helper.make_node(
            "DequantizeLinear", [q_name, s_name, z_name], [dequantized], name=f"{layer.node}_DequantizeLinear", axis=1
        ))


def store_half(model: onnx.ModelProto, layers: list[WeightLayer], dtype: int) -> None:
    """Stores each layer's weight as fp16 or bf16 with a Cast back to fp32 in front of its node.

    onnxruntime constant-folds the Cast when it loads the session, so compute stays fp32 (fast on
    CPU, where fp16 kernels are few) while the file holds half the bytes.
    """
    graph = model.graph
    for layer in layers:
        values = _take_initializer(graph, layer.weight)
        stored = f"{layer.weight}_{onnx.TensorProto.DataType.Name(dtype).lower()}"
        half = values.astype(ml_dtypes.bfloat16 if dtype == onnx.TensorProto.BFLOAT16 else np.float16)
        tensor = helper.make_tensor(stored, dtype, values.shape, half.tobytes(), raw=True)
        graph.initializer.append(tensor)
        node = find_node(graph, layer.node)
        index = list(graph.node).index(node)
        cast_output = f"{layer.node}_weight"
        node.input[_weight_index(node, layer.weight)] = cast_output
        graph.node.insert(index, helper.make_node(
            "Cast", [stored], [cast_output], name=f"{layer.node}_Cast", to=onnx.TensorProto.FLOAT
        ))


def _weight_index(node: onnx.NodeProto, weight: str) -> int:
    return list(node.input).index(weight)
