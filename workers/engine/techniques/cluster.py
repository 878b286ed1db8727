"""The `cluster` technique (weight sharing): each weight tensor keeps at most 2^bits distinct values,
found by 1-D k-means, and is stored in the ONNX file as uint8 indices plus a codebook.

The values are shared in the torch model first (optionally with GPTQ-style error compensation on
calibration activations), the model is exported, then each clustered initializer is re-encoded by
`workers.engine.export.compact_storage.encode_codebooks`, which onnxruntime decodes at load time.
"""

import logging
import re
import time

import numpy as np
import onnx
import torch
from transformers.pytorch_utils import Conv1D

from workers.engine.architectures.onnx_weights import (
    EMBEDDING_WEIGHT_INPUTS,
    LINEAR_WEIGHT_INPUTS,
    initializer_module_name,
    node_module_path,
    weight_consumers,
)
from workers.engine.devices import module_device
from workers.engine.export.compact_storage import encode_codebooks
from workers.engine.export.onnx import export_onnx
from workers.engine.loading import model_input_names
from workers.engine.techniques.cluster_config import ClusterConfig
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.cluster_kmeans import collect_input_hessians, gptq_codebook, kmeans_1d, nearest_centroid

logger = logging.getLogger(__name__)


def _is_skipped(skip: list[re.Pattern[str]], *names: str) -> bool:
    return any(pattern.search(name) for pattern in skip for name in names)


def _targets(model: torch.nn.Module, config: ClusterConfig) -> dict[str, torch.nn.Module]:
    """Module path -> module whose `weight` is clustered: Linear/Conv1D layers and, if asked, the
    input embeddings, minus skipped and small ones."""
    skip = [re.compile(pattern) for pattern in config.skip]
    embedding = model.get_input_embeddings() if config.embeddings else None
    targets = {}
    for name, module in model.named_modules():
        if not (isinstance(module, (torch.nn.Linear, Conv1D)) or module is embedding):
            continue
        if module.weight.numel() < config.min_elements or _is_skipped(skip, name, f"{name}.weight"):
            continue
        targets[name] = module
    return targets


def _untie_from_others(model: torch.nn.Module, targets: dict[str, torch.nn.Module]) -> int:
    """Gives a target its own copy of a weight it shares with a module that is not clustered (GPT-2's
    LM head and embeddings), so a skipped module keeps its fp32 values. The ONNX export stores the
    two copies anyway, so this costs nothing in the file."""
    users: dict[int, set[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            users.setdefault(id(weight), set()).add(name)
    untied = 0
    for name, module in targets.items():
        if not users[id(module.weight)] <= targets.keys():
            module.weight = torch.nn.Parameter(module.weight.detach().clone(), requires_grad=False)
            untied += 1
    return untied


def _weight_matrix(module: torch.nn.Module) -> torch.Tensor:
    """(out_features, in_features) for a layer; Conv1D stores the transpose. Embeddings: (vocab, dim)."""
    return module.weight.detach().T if isinstance(module, Conv1D) else module.weight.detach()


def _set_weight_matrix(module: torch.nn.Module, matrix: torch.Tensor) -> None:
    module.weight.data.copy_(matrix.T if isinstance(module, Conv1D) else matrix)


def _bits_of(module: torch.nn.Module, config: ClusterConfig) -> int:
    if isinstance(module, torch.nn.Embedding) and config.embedding_bits is not None:
        return config.embedding_bits
    return config.bits


def _share_values(
    module: torch.nn.Module, hessian: torch.Tensor | None, config: ClusterConfig
) -> tuple[torch.Tensor, int, float]:
    """The module's weight matrix with at most 2^bits distinct values, the k-means iterations run and
    the seconds k-means took."""
    matrix = _weight_matrix(module).float()
    # 1-D k-means is numpy (CPU); the GPTQ rounding below runs on the model's device.
    values = matrix.cpu().numpy().reshape(-1)
    weights = None
    if hessian is not None:
        # Importance of a weight = mean squared activation of its input column (the Hessian's diagonal):
        # an error there moves the outputs in proportion to it.
        importance = torch.diagonal(hessian).clamp_min(0).cpu().numpy()
        weights = np.broadcast_to(importance, matrix.shape).reshape(-1)
        if not np.any(weights > 0):
            weights = None
    started = time.perf_counter()
    codebook, iterations = kmeans_1d(values, 2 ** _bits_of(module, config), weights, config.max_iterations)
    seconds = time.perf_counter() - started
    codebook_t = torch.from_numpy(codebook).float().to(matrix.device)
    if hessian is not None and config.error_compensation:
        return gptq_codebook(matrix, hessian, codebook_t), iterations, seconds
    return nearest_centroid(matrix, codebook_t), iterations, seconds


def _encodable(graph: onnx.GraphProto, config: ClusterConfig, targets: set[str]) -> dict[str, set[str]]:
    """Initializers that feed a MatMul/Gemm as weight (or an embedding Gather) of a clustered module.

    Matching on the consumer's module path keeps the position and token-type embeddings (also
    Gather data) out, and the skip patterns are checked again on the initializer names. Returns each
    initializer's module paths: a module the export dropped (e.g. an unused pooler) has none.
    """
    skip = [re.compile(pattern) for pattern in config.skip]
    inputs = {**LINEAR_WEIGHT_INPUTS, **EMBEDDING_WEIGHT_INPUTS}
    encodable = {}
    for name, nodes in weight_consumers(graph, inputs).items():
        paths = {node_module_path(node.name) for node in nodes}
        if paths <= targets and not _is_skipped(skip, initializer_module_name(name)):
            encodable[name] = paths
    return encodable


def apply_cluster(config: ClusterConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("cluster needs a torch model to export.")
    # Statistics and rounding run where the model is (the GPU on a cuda job); the export moves it to the CPU.
    model = state.torch_model.eval()
    device = str(module_device(model))
    levels = 2 ** max(config.bits, config.embedding_bits or 0)
    targets = _targets(model, config)
    untied = _untie_from_others(model, targets)
    layers = [name for name, module in targets.items() if isinstance(module, (torch.nn.Linear, Conv1D))]

    hessians: dict[str, torch.Tensor] = {}
    if config.error_compensation and layers:
        def collect() -> dict[str, torch.Tensor]:
            return collect_input_hessians(
                model, {name: targets[name] for name in layers}, context.tokenizer,
                model_input_names(model, context.tokenizer), context.calibration_texts, context.sequence_length,
            )

        # On the untouched original (a goal search's first step) every candidate has the same statistics.
        hessians = collect() if context.reuse is None else context.reuse.value(
            "input_hessians", (tuple(sorted(layers)), context.sequence_length), collect
        )
    context.on_progress(0.1)

    kmeans_seconds = rounding_seconds = 0.0
    iterations: dict[str, int] = {}
    with torch.no_grad():
        for index, (name, module) in enumerate(targets.items()):
            started = time.perf_counter()
            shared, iterations[name], seconds = _share_values(module, hessians.get(name), config)
            kmeans_seconds += seconds
            rounding_seconds += time.perf_counter() - started - seconds
            _set_weight_matrix(module, shared)
            context.on_progress(0.1 + 0.6 * (index + 1) / len(targets))

    fp32_path = context.work_dir / "model_shared_fp32.onnx"
    export_onnx(model, state.task, model_input_names(model, context.tokenizer), fp32_path)
    context.on_progress(0.85)

    onnx_model = onnx.load(str(fp32_path))
    encodable = _encodable(onnx_model.graph, config, set(targets))
    encoded = encode_codebooks(onnx_model, list(encodable))
    over = [entry.name for entry in encoded if entry.values > levels]
    if over:
        raise RuntimeError(f"Clustered tensors {over} kept more than {levels} values; the export changed them.")
    output_path = context.work_dir / "model.onnx"
    onnx.save_model(onnx_model, str(output_path))
    fp32_path.unlink()

    clustered = sum(entry.elements for entry in encoded)
    context.details.update({
        "bits": config.bits,
        "embedding_bits": config.embedding_bits if config.embedding_bits is not None else config.bits,
        "tensors_clustered": len(encoded),
        "layers_clustered": sorted(set().union(*encodable.values())),
        "parameters_clustered": clustered,
        "max_distinct_values": max((entry.values for entry in encoded), default=0),
        "error_compensation": bool(hessians),
        "calibration_texts": len(context.calibration_texts) if hessians else 0,
        "kmeans_seconds": round(kmeans_seconds, 3),
        # Rounding to the codebook: GPTQ's column loop, or plain nearest-value rounding.
        "rounding_seconds": round(rounding_seconds, 3),
        "kmeans_iterations_max": max(iterations.values(), default=0),
        "weights_untied": untied,
    })
    context.placement.update(
        input_statistics=device if hessians else "none", kmeans="cpu", rounding=device, export="cpu"
    )
    logger.info(
        "cluster: %d modules to %d values each (%s), %d ONNX tensors (%d parameters) stored as uint8 indices "
        "+ codebook; %.2f MB",
        len(targets), levels, "GPTQ error compensation" if hessians else "plain k-means", len(encoded),
        clustered, output_path.stat().st_size / 1e6,
    )
    context.on_progress(1.0)
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=None, onnx_path=output_path)
