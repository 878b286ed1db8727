"""Exports a torch model to an ExecuTorch program (`model.pte`) for phones and other edge CPUs: the
graph from torch.export, delegated to XNNPACK, in fp32 or with int8 weights (one scale per output
channel) and int8 activations quantized per call, through PT2E quantization with ExecuTorch's own
XNNPACKQuantizer.

The program takes the tokenizer's inputs (int64, batch and sequence length dynamic up to the bounds
it was exported for) and returns the task's tensor: last_hidden_state or logits.
"""

from pathlib import Path
from typing import Literal

import torch

from workers.engine.architectures.task_io import FORWARD_KWARGS_BY_TASK, OUTPUT_BY_TASK
from workers.engine.architectures.tasks import Task

Quantization = Literal["none", "int8_dynamic"]
PTE_FILE = "model.pte"
# The example batch must have 2 rows or more: with 1, torch.export specialises the batch dimension
# to a constant and refuses the dynamic one.
_EXAMPLE_BATCH, _EXAMPLE_LENGTH = 2, 16


class _TaskOutput(torch.nn.Module):
    """forward(*inputs, in input_names' order) -> the task's output tensor: what the runtime returns."""

    def __init__(self, model: torch.nn.Module, task: Task, input_names: list[str]):
        super().__init__()
        self.model, self.task, self.input_names = model, task, input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)), **FORWARD_KWARGS_BY_TASK[self.task])
        return getattr(outputs, OUTPUT_BY_TASK[self.task])


def _example(input_names: list[str], vocab_size: int) -> tuple[torch.Tensor, ...]:
    ids = (torch.arange(_EXAMPLE_BATCH * _EXAMPLE_LENGTH).reshape(_EXAMPLE_BATCH, _EXAMPLE_LENGTH) * 7 + 3) % vocab_size
    tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    tensors["attention_mask"][1, -4:] = 0  # a padded row, so masking is traced as it runs
    return tuple(tensors[name] for name in input_names)


def _dynamic_shapes(input_names: list[str], max_batch: int, max_length: int) -> tuple[dict, ...]:
    """Each input's dynamic batch and sequence dimensions, in input order."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    length = torch.export.Dim("sequence", min=2, max=max_length)
    return tuple({0: batch, 1: length} for _ in input_names)


def _keep_integer_scalar_arithmetic(graph_module: torch.fx.GraphModule) -> None:
    """XNNPACKQuantizer turns every `tensor + scalar` into `tensor + tensor(float(scalar))`
    (_convert_scalars_to_attrs). transformers' attention-mask code adds a scalar to an integer
    `arange`, which then becomes a float and fails as an index. No option turns that off, so integer
    additions and multiplications by a scalar are moved to their .Scalar overloads, which it leaves alone."""
    scalar_overloads = {
        torch.ops.aten.add.Tensor: torch.ops.aten.add.Scalar,
        torch.ops.aten.mul.Tensor: torch.ops.aten.mul.Scalar,
    }
    for node in graph_module.graph.nodes:
        value = node.meta.get("val")
        if (
            node.op == "call_function" and node.target in scalar_overloads and isinstance(value, torch.Tensor)
            and not value.is_floating_point() and isinstance(node.args[0], torch.fx.Node)
            and not isinstance(node.args[1], torch.fx.Node)
        ):
            node.target = scalar_overloads[node.target]
    graph_module.recompile()


def _module_path(traced_path: str) -> str:
    """'L['self'].model.encoder.layer.0' or 'model.encoder.layer.0' -> 'model.encoder.layer.0'."""
    return traced_path.split("].", 1)[1] if traced_path.startswith("L[") and "]." in traced_path else traced_path


def _quantized(
    exported: torch.export.ExportedProgram, example: tuple[torch.Tensor, ...], skip: list[str]
) -> torch.fx.GraphModule:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    if skip:
        # set_module_name(name, None) is refused by this quantizer ("not supported yet"): a filter leaves
        # out every node traced inside a skipped module instead.
        skipped = set(skip)
        quantizer.set_filter_function(lambda node: not any(
            _module_path(path) in skipped for path, _ in node.meta.get("nn_module_stack", {}).values()
        ))
    graph_module = exported.module()
    _keep_integer_scalar_arithmetic(graph_module)
    prepared = prepare_pt2e(graph_module, quantizer)
    with torch.no_grad():
        prepared(*example)  # dynamic activations need no ranges; the pass still expects one run
    return convert_pt2e(prepared)


def export_pte(
    model: torch.nn.Module,
    task: Task,
    input_names: list[str],
    dest: Path,
    quantization: Quantization = "none",
    max_batch: int = 64,
    max_length: int = 128,
    skip: list[str] | None = None,
) -> Path:
    """Writes `dest` (a .pte); `skip`: module names (in `model`) left in fp32."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    wrapped = _TaskOutput(model.to("cpu").eval(), task, input_names).eval()
    example = _example(input_names, model.config.vocab_size)
    shapes = _dynamic_shapes(input_names, max(max_batch, _EXAMPLE_BATCH), max(max_length, _EXAMPLE_LENGTH))
    with torch.no_grad():
        # The wrapper takes *inputs (one argument holding them all); the graph module it becomes, each one.
        exported = torch.export.export(wrapped, example, dynamic_shapes=(shapes,))
        if quantization == "int8_dynamic":
            module = _quantized(exported, example, [f"model.{name}" for name in skip or []])
            exported = torch.export.export(module, example, dynamic_shapes=shapes)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".pte.partial")
    partial.write_bytes(program.buffer)
    partial.replace(dest)
    return dest
