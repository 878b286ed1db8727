"""Outlier channels computed apart (LLM.int8()'s decomposition, for onnxruntime graphs): the few input
channels of a MatMul whose activations reach far beyond the others are multiplied in fp32 by a small
side MatMul, and zeroed in the input of the int8 one, so its per-tensor activation scale is set by the
ordinary channels instead of by the outliers.

    MatMul(x, W)  ->  MatMul(x * keep, W with the outlier rows zeroed) + MatMul(Gather(x, outliers), W[outliers])

Exact in fp32; quantize_dynamic then quantizes only the first MatMul. On all-MiniLM-L6-v2, 8
channels per layer lifted int8_dynamic's held-out fidelity from 0.9920 to 0.9986 for 3% more bytes
(benchmarks/engine_bench.py). By hand because onnxruntime's quantizers have no such option (their
answer to outliers is per-tensor calibration or SmoothQuant, which smoothing.py already offers, and
which did not reach 0.998 on MiniLM without falling back whole layers).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from workers.engine.evaluation.runners import Batch
from workers.engine.techniques.quantize.layers import WeightLayer
from workers.engine.techniques.quantize.rewrites import find_node


def input_peaks(model: onnx.ModelProto, layers: list[WeightLayer], batches: list[Batch]) -> dict[str, np.ndarray]:
    """max |x_j| over every token of the batches, per input channel j of each layer's MatMul, read from
    the graph itself (so a smoothed graph is measured as it will run)."""
    inputs = {layer.node: find_node(model.graph, layer.node).input[0] for layer in layers}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {output.name for output in probe.graph.output}
    for name in sorted(set(inputs.values()) - known):
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    # Unoptimised, so every intermediate tensor asked for still exists under its name.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = sorted(set(inputs.values()))
    feed_names = {item.name for item in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for batch in batches:
        values = session.run(wanted, {name: value for name, value in batch.items() if name in feed_names})
        for name, value in zip(wanted, values):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return {node: peaks[tensor] for node, tensor in inputs.items()}


def split_outlier_channels(
    model: onnx.ModelProto, layers: list[WeightLayer], peaks: dict[str, np.ndarray], count: int
) -> list[str]:
    """Rewrites each layer's MatMul (from layers.weight_layers: a 2-D weight of its own, as the second
    input) as above, with its `count` highest-peak input channels apart; the int8 MatMul keeps the
    node's name and weight initializer, so layer selection and fallback still find it. Returns the
    names of the side MatMuls (they must stay fp32)."""
    graph = model.graph
    side_nodes = []
    for layer in layers:
        node = find_node(graph, layer.node)
        weight_init = next(init for init in graph.initializer if init.name == layer.weight)
        weight = numpy_helper.to_array(weight_init).copy()
        if count >= weight.shape[0]:
            continue
        outliers = np.sort(np.argsort(-peaks[layer.node], kind="stable")[:count]).astype(np.int64)
        keep = np.ones(weight.shape[0], np.float32)
        keep[outliers] = 0
        outlier_rows = weight[outliers].copy()
        weight[outliers] = 0  # else these rows would still widen the int8 weight scales
        weight_init.CopyFrom(numpy_helper.from_array(weight, layer.weight))
        base = layer.node
        graph.initializer.extend([
            numpy_helper.from_array(keep, f"{base}_keep"),
            numpy_helper.from_array(outliers, f"{base}_outlier_channels"),
            numpy_helper.from_array(outlier_rows, f"{base}_outlier_weight"),
        ])
        source, result = node.input[0], node.output[0]
        node.input[0], node.output[0] = f"{base}_ordinary_input", f"{base}_ordinary_output"
        index = list(graph.node).index(node)
        side = f"{base}_outliers"
        graph.node.insert(index, helper.make_node(
            "Mul", [source, f"{base}_keep"], [f"{base}_ordinary_input"], name=f"{base}_ordinary"))
        graph.node.insert(index + 1, helper.make_node(
            "Gather", [source, f"{base}_outlier_channels"], [f"{base}_outlier_input"], name=f"{base}_outlier_gather",
            axis=-1))
        graph.node.insert(index + 2, helper.make_node(
            "MatMul", [f"{base}_outlier_input", f"{base}_outlier_weight"], [f"{base}_outlier_output"], name=side))
        # index + 3 is the int8 MatMul itself
        graph.node.insert(index + 4, helper.make_node(
            "Add", [f"{base}_ordinary_output", f"{base}_outlier_output"], [result], name=f"{base}_outlier_add"))
        side_nodes.append(side)
    return side_nodes


def write_split(
    source: Path, layers: list[WeightLayer], peaks: dict[str, np.ndarray], count: int, destination: Path
) -> list[str]:
    """`split_outlier_channels` on the graph at `source`, saved to `destination`; returns the side MatMuls."""
    model = onnx.load(str(source))
    side_nodes = split_outlier_channels(model, layers, peaks, count)
    onnx.save(model, str(destination))
    return side_nodes
