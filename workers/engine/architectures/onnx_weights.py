"""Which inputs of which ONNX ops hold weights, and how the legacy exporter names the module behind
a node or an initializer, so ONNX-level passes can select tensors by the same module paths as torch ones.
"""

from collections import defaultdict

import onnx

# Op type -> position of the weight input among the op's inputs. MatMul/Gemm take the weight as B
# (the legacy exporter folds nn.Linear's transpose into a (in, out) initializer named "onnx::MatMul_N";
# GPT-2's Conv1D and poolers become Gemm with the parameter's own name); Gather takes an embedding
# table as its data input; MatMulInteger is what quantize_dynamic turns a MatMul into.
LINEAR_WEIGHT_INPUTS: dict[str, int] = {"MatMul": 1, "Gemm": 1, "MatMulInteger": 1}
EMBEDDING_WEIGHT_INPUTS: dict[str, int] = {"Gather": 0}

# `workers.engine.export.onnx` wraps the model as `self.model`, so every exported name starts here.
_WRAPPER_NODE_PREFIX = "/model/"
_WRAPPER_INITIALIZER_PREFIX = "model."


def node_module_path(node_name: str) -> str:
    """"/model/bert/encoder/layer.0/output/dense/MatMul" -> "bert.encoder.layer.0.output.dense".

    The exporter names a node "<module scope>/<op>"; the scope is the module path with "/" for ".".
    """
    scope = node_name.removeprefix(_WRAPPER_NODE_PREFIX).rpartition("/")[0]
    return scope.replace("/", ".")


def initializer_module_name(name: str) -> str:
    """"model.bert.pooler.dense.weight" -> "bert.pooler.dense.weight"; folded constants keep their
    exporter name (e.g. "onnx::MatMul_320")."""
    return name.removeprefix(_WRAPPER_INITIALIZER_PREFIX)


def weight_consumers(graph: onnx.GraphProto, weight_inputs: dict[str, int]) -> dict[str, list[onnx.NodeProto]]:
    """Initializer name -> the nodes that take it at a weight position of `weight_inputs`."""
    initializers = {init.name for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        index = weight_inputs.get(node.op_type)
        if index is not None and index < len(node.input) and node.input[index] in initializers:
            consumers[node.input[index]].append(node)
    return dict(consumers)

