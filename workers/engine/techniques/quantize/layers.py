"""The weighted layers of an exported graph, named by the torch module paths users know, and which of
them a config selects.

The legacy exporter names a layer's nodes after its module path under the export wrapper's `model`
attribute ("/model/encoder/layer.0/output/dense/MatMul" is "encoder.layer.0.output.dense").
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization.onnx_model import ONNXModel

from workers.engine.architectures.layer_groups import LAYER_GROUPS_BY_MODEL_TYPE, layer_group_pattern
from workers.engine.errors import EngineUserError
from workers.engine.techniques.quantize.config import QuantizeConfig

logger = logging.getLogger(__name__)

_WRAPPER_PREFIX = "/model/"
# The input holding the weight: a MatMul's right operand, a Gather's table.
_WEIGHT_INPUT = {"MatMul": 1, "Gather": 0}


@dataclass(frozen=True)
class WeightLayer:
    module: str  # e.g. "encoder.layer.0.output.dense"
    node: str  # the ONNX node that consumes the weight
    op_type: str  # "MatMul" or "Gather" (embeddings)
    weight: str  # initializer name
    numel: int
    # For a MatMul, input features + output features: the activation values per token that computing
    # some of its input channels apart passes over (a Mul on its input, an Add on its output).
    width: int = 0

    @property
    def is_embedding(self) -> bool:
        return self.op_type == "Gather"


def prepare_graph(source: Path, destination: Path) -> Path:
    """Rewrites Gemm (GPT-2's Conv1D, classifier heads) as MatMul + Add, so every scheme and every
    quantizer sees one op per Linear layer; the MatMul keeps the name "<gemm name>_MatMul"."""
    model = ONNXModel(onnx.load(str(source)))
    model.replace_gemm_with_matmul()
    onnx.save(model.model, str(destination))
    return destination


def module_name(node_name: str) -> str:
    if not node_name.startswith(_WRAPPER_PREFIX):
        return node_name
    return ".".join(node_name.removeprefix(_WRAPPER_PREFIX).split("/")[:-1])


def weight_layers(model: onnx.ModelProto) -> list[WeightLayer]:
    """MatMuls with a 2-D constant right operand and Gathers from a 2-D constant table (embeddings).

    A weight read by several nodes is left out: rewriting it for one would break the others.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers = Counter(name for node in graph.node for name in node.input)
    layers = []
    for node in graph.node:
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        weight = initializers.get(node.input[index])
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        if consumers[weight.name] > 1:
            logger.info("left %s as it is: its weight %s is shared with other nodes", node.name, weight.name)
            continue
        numel = int(weight.dims[0]) * int(weight.dims[1])
        width = int(weight.dims[0]) + int(weight.dims[1])
        layers.append(WeightLayer(module_name(node.name), node.name, node.op_type, weight.name, numel, width))
    return layers


def _group_patterns(model_type: str, groups: list[str]) -> list[re.Pattern[str]]:
    patterns = []
    for group in groups:
        pattern = layer_group_pattern(model_type, group)
        if pattern is None:
            known = ", ".join(sorted(LAYER_GROUPS_BY_MODEL_TYPE))
            raise EngineUserError(
                f"keep_fp32 {group!r} is not mapped for model_type {model_type!r} (mapped: {known}); "
                "remove keep_fp32 from the recipe, or name the layers in skip."
            )
        patterns.append(pattern)
    return patterns


def select_layers(
    layers: list[WeightLayer], config: QuantizeConfig, model_type: str
) -> tuple[list[WeightLayer], list[WeightLayer]]:
    """(selected, left alone) by modules, skip, embeddings and keep_fp32; refuses patterns matching nothing."""
    include = [re.compile(pattern) for pattern in config.modules] if config.modules else None
    skip = [re.compile(pattern) for pattern in config.skip]
    # Layer groups are patterns on node names (layer_groups.py), the rest on module names.
    groups = _group_patterns(model_type, config.keep_fp32)
    for label, patterns in (("modules", include or []), ("skip", skip)):
        for pattern in patterns:
            if not any(pattern.search(layer.module) for layer in layers):
                examples = ", ".join(layer.module for layer in layers[:4])
                raise EngineUserError(
                    f"{label} pattern {pattern.pattern!r} matches no layer of this model; layers are named "
                    f"like {examples}"
                )
    for group, pattern in zip(config.keep_fp32, groups, strict=True):
        if not any(pattern.search(layer.node) for layer in layers):
            raise RuntimeError(f"Layer group {group!r} matched no node of the exported {model_type} graph.")
    selected, left = [], []
    for layer in layers:
        chosen = (
            (include is None or any(pattern.search(layer.module) for pattern in include))
            and not any(pattern.search(layer.module) for pattern in skip)
            and not any(pattern.search(layer.node) for pattern in groups)
            and (config.embeddings or not layer.is_embedding)
        )
        (selected if chosen else left).append(layer)
    return selected, left
