"""Structural pruning: ranks FFN neurons or attention heads, then removes them physically by slicing
each layer's projections (workers.engine.pruned_model), so the model gets smaller and faster.
"""

import logging
import re

import torch

from workers.engine.architectures.structure import LayerStructure, head_dim, layer_structure, transformer_layers
from workers.engine.architectures.tasks import Task
from workers.engine.pruned_model import as_out_in, head_count, keep_heads, keep_neurons, neuron_count
from workers.engine.state import StepContext
from workers.engine.techniques.prune.config import PruneConfig
from workers.engine.techniques.prune.importance import (
    calibration_batches,
    observe_inputs,
    taylor_group_scores,
)

logger = logging.getLogger(__name__)

Layers = list[tuple[str, torch.nn.Module]]


def _weight(layer: torch.nn.Module, path: str) -> torch.Tensor:
    module = layer.get_submodule(path)
    return as_out_in(module, module.weight.detach())


def _magnitude_scores(structure_kind: str, layers: Layers, structure: LayerStructure, width: int) -> list[torch.Tensor]:
    scores = []
    for _, layer in layers:
        if structure_kind == "neurons":
            # The L2 norm of a neuron's input row and output column together.
            squares = _weight(layer, structure.ffn_in).pow(2).sum(1) + _weight(layer, structure.ffn_out).pow(2).sum(0)
        else:
            heads = head_count(layer, structure)
            # A head's q/k/v rows and the attention-output columns it feeds; separate or packed,
            # the q/k/v rows stack to [q | k | v], each heads * width long.
            rows = torch.cat([_weight(layer, path) for path in structure.qkv_modules], dim=0)
            qkv_squares = rows.reshape(3, heads * width, -1).pow(2).sum((0, 2))
            squares = qkv_squares + _weight(layer, structure.attention_out).pow(2).sum(0)
            squares = squares.reshape(heads, width).sum(1)
        scores.append(squares.sqrt())
    return scores


def _activation_scores(
    config: PruneConfig, model: torch.nn.Module, task: Task, layers: Layers, structure: LayerStructure,
    width: int, context: StepContext,
) -> list[torch.Tensor]:
    """neurons: mean |activation| times the output-weight norm; heads: mean norm of each head's
    contribution to the attention output (its context slice through its W_o columns)."""
    calibration = calibration_batches(model, context, config.calibration_samples)
    modules = {name: layer.get_submodule(structure.attention_out if config.structure == "heads" else structure.ffn_out)
               for name, layer in layers}
    out_weights = {name: as_out_in(module, module.weight.detach()) for name, module in modules.items()}
    totals: dict[str, torch.Tensor] = {}
    tokens: dict[str, int] = {}

    def observe(name: str, rows: torch.Tensor) -> None:
        if config.structure == "neurons":
            total = rows.abs().sum(0)
        else:
            weight = out_weights[name]
            heads = weight.shape[1] // width
            per_head = rows.reshape(-1, heads, width)
            contributions = torch.einsum("thd,ohd->tho", per_head, weight.reshape(weight.shape[0], heads, width))
            total = contributions.norm(dim=-1).sum(0)
        totals[name] = totals[name] + total if name in totals else total
        tokens[name] = tokens.get(name, 0) + rows.shape[0]

    observe_inputs(model, task, modules, calibration, observe, lambda f: context.on_progress(0.5 * f))
    scores = []
    for name, _ in layers:
        mean = totals[name] / tokens[name]
        scores.append(mean * out_weights[name].norm(dim=0) if config.structure == "neurons" else mean)
    return scores


def _gradient_scores(
    config: PruneConfig, model: torch.nn.Module, task: Task, layers: Layers, structure: LayerStructure,
    width: int, context: StepContext,
) -> list[torch.Tensor]:
    calibration = calibration_batches(model, context, config.calibration_samples)
    if config.structure == "heads":
        modules = {name: (layer.get_submodule(structure.attention_out), width) for name, layer in layers}
    else:
        modules = {name: (layer.get_submodule(structure.ffn_out), 1) for name, layer in layers}
    scores = taylor_group_scores(model, task, modules, calibration, lambda f: context.on_progress(0.5 * f))
    return [scores[name] for name, _ in layers]


def _removals(config: PruneConfig, scores: list[torch.Tensor]) -> tuple[list[list[int]], list[int]]:
    """Indices to remove per layer, and the layers where removal stopped to keep one head/neuron."""
    counts = [score.numel() for score in scores]
    kept_minimum: set[int] = set()
    if config.scope == "per_layer":
        removed = []
        for layer, score in enumerate(scores):
            wanted = round(config.sparsity * score.numel())
            if wanted >= score.numel():
                kept_minimum.add(layer)
            order = torch.argsort(score, stable=True)[: min(wanted, score.numel() - 1)]
            removed.append(sorted(order.tolist()))
        return removed, sorted(kept_minimum)
    flat = torch.cat([score.float() for score in scores])
    owners = [(layer, index) for layer, count in enumerate(counts) for index in range(count)]
    target, total = round(config.sparsity * flat.numel()), 0
    removed: list[list[int]] = [[] for _ in scores]
    for position in torch.argsort(flat, stable=True).tolist():
        if total == target:
            break
        layer, index = owners[position]
        if len(removed[layer]) == counts[layer] - 1:
            kept_minimum.add(layer)
            continue
        removed[layer].append(index)
        total += 1
    return [sorted(items) for items in removed], sorted(kept_minimum)


def prune_structure(config: PruneConfig, model: torch.nn.Module, task: Task, context: StepContext) -> None:
    """Removes heads or neurons in place and updates the model's config when it can express the result."""
    structure = layer_structure(model)
    width = head_dim(model)
    patterns = [re.compile(pattern) for pattern in config.skip]
    all_layers = transformer_layers(model)
    skipped = [name for name, _ in all_layers if any(pattern.search(name) for pattern in patterns)]
    layers = [(name, layer) for name, layer in all_layers if name not in skipped]

    if config.importance == "magnitude":
        scores = _magnitude_scores(config.structure, layers, structure, width)
    elif config.importance == "activation":
        scores = _activation_scores(config, model, task, layers, structure, width, context)
    else:
        scores = _gradient_scores(config, model, task, layers, structure, width, context)
    removed, kept_minimum = _removals(config, scores)

    kept_per_layer = {}
    with torch.no_grad():
        for (name, layer), drop, score in zip(layers, removed, scores, strict=True):
            keep = sorted(set(range(score.numel())) - set(drop))
            if config.structure == "heads":
                keep_heads(layer, structure, width, keep)
                kept_per_layer[name] = keep
            else:
                keep_neurons(layer, structure, keep)
                kept_per_layer[name] = len(keep)
    context.on_progress(0.6)

    neuron_counts = {neuron_count(layer, structure) for _, layer in all_layers}
    if config.structure == "neurons" and len(neuron_counts) == 1:
        # Every layer has the same width again, so plain transformers can load the folder.
        setattr(model.config, structure.intermediate_size_attr, neuron_counts.pop())
    key = "kept_heads" if config.structure == "heads" else "kept_neurons"
    context.details.update({
        key: kept_per_layer,
        "kept_at_least_one_in": [layers[index][0] for index in kept_minimum],
        "skipped_layers": skipped,
        "heads_per_layer": [head_count(layer, structure) for _, layer in all_layers],
        "neurons_per_layer": [neuron_count(layer, structure) for _, layer in all_layers],
    })
    logger.info(
        "prune %s (%s, %s): removed %d of %d in %d layers%s",
        config.structure, config.importance, config.scope, sum(len(items) for items in removed),
        sum(score.numel() for score in scores), len(layers),
        f"; kept one in {len(kept_minimum)} layers that would have lost all" if kept_minimum else "",
    )
