"""Weight-level pruning in place: unstructured (global or per-layer ranking) and semi-structured 2:4.

Weights are zeroed in the dense tensors; the smaller artifact comes from sparse storage downstream.
Only Linear and Conv1D weights are candidates: embeddings and LayerNorms are never zeroed.
"""

import logging
import re
from collections import Counter

import torch
from transformers.pytorch_utils import Conv1D

from workers.engine.architectures.tasks import Task
from workers.engine.pruned_model import as_out_in
from workers.engine.state import StepContext
from workers.engine.techniques.prune.config import PruneConfig
from workers.engine.techniques.prune.importance import (
    calibration_batches,
    input_feature_norms,
    taylor_weight_scores,
)

logger = logging.getLogger(__name__)

GROUP = 4  # N:M with N = 2, M = 4: the pattern sparse tensor cores and cuSPARSELt accelerate
KEEP_PER_GROUP = 2


def candidate_layers(model: torch.nn.Module, skip: list[str]) -> tuple[dict[str, torch.nn.Module], list[str]]:
    """The prunable Linear/Conv1D layers, and the names left out (by pattern or a tied weight)."""
    patterns = [re.compile(pattern) for pattern in skip]
    # A weight shared with another module (GPT-2's lm_head and input embeddings) is left whole:
    # zeroing it here would also zero the embeddings.
    uses = Counter(id(parameter) for _, parameter in model.named_parameters(remove_duplicate=False))
    candidates, skipped = {}, []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        if any(pattern.search(name) for pattern in patterns) or uses[id(module.weight)] > 1:
            skipped.append(name)
        else:
            candidates[name] = module
    return candidates, skipped


def _scores(
    config: PruneConfig, model: torch.nn.Module, task: Task, layers: dict[str, torch.nn.Module], context: StepContext
) -> dict[str, torch.Tensor]:
    """Importance of every weight, as (out, in) tensors; the lowest are zeroed."""
    def progress(fraction: float) -> None:
        context.on_progress(0.8 * fraction)

    if config.importance == "magnitude":
        return {name: as_out_in(module, module.weight.detach()).abs() for name, module in layers.items()}
    calibration = calibration_batches(model, context, config.calibration_samples)
    if config.importance == "activation":
        # Wanda (Sun et al. 2023): |W_ij| * ||X_j||, large weights on quiet inputs matter little.
        norms = input_feature_norms(model, task, layers, calibration, progress)
        return {
            name: as_out_in(module, module.weight.detach()).abs() * norms[name][None, :]
            for name, module in layers.items()
        }
    scores = taylor_weight_scores(
        model, task, {name: module.weight for name, module in layers.items()}, calibration, progress
    )
    return {name: as_out_in(layers[name], score) for name, score in scores.items()}


def _lowest_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """A boolean keep-mask (flat) that drops exactly the `count` lowest scores."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        keep[torch.topk(scores.flatten(), count, largest=False).indices] = False
    return keep


def _unstructured_masks(config: PruneConfig, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if config.scope == "per_layer":
        return {
            name: _lowest_mask(score, round(config.sparsity * score.numel())).view_as(score)
            for name, score in scores.items()
        }
    flat = torch.cat([score.flatten().float() for score in scores.values()])
    keep = _lowest_mask(flat, round(config.sparsity * flat.numel()))
    masks, offset = {}, 0
    for name, score in scores.items():
        masks[name] = keep[offset : offset + score.numel()].view_as(score)
        offset += score.numel()
    return masks


def _two_four_mask(score: torch.Tensor) -> torch.Tensor:
    """Keeps the 2 highest of every 4 consecutive weights along the input dimension."""
    out_features, in_features = score.shape
    groups = score.reshape(out_features, in_features // GROUP, GROUP)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(KEEP_PER_GROUP, dim=-1).indices, True)
    return keep.reshape(out_features, in_features)


def prune_weights(config: PruneConfig, model: torch.nn.Module, task: Task, context: StepContext) -> None:
    """Zeroes weights in place and writes the per-layer sparsity into `context.details`."""
    layers, skipped = candidate_layers(model, config.skip)
    if config.structure == "2:4":
        unfit = [name for name, module in layers.items() if as_out_in(module, module.weight).shape[1] % GROUP]
        if unfit:
            # Rare (every supported model has widths divisible by 4), so say which rather than fail.
            skipped.extend(unfit)
            layers = {name: module for name, module in layers.items() if name not in unfit}
            logger.info("prune 2:4: left %d layers whole, their input width is not a multiple of 4", len(unfit))
    scores = _scores(config, model, task, layers, context)
    if config.structure == "2:4":
        masks = {name: _two_four_mask(score) for name, score in scores.items()}
    else:
        masks = _unstructured_masks(config, scores)

    layer_sparsity = {}
    with torch.no_grad():
        for name, module in layers.items():
            weight = as_out_in(module, module.weight)
            weight.mul_(masks[name].to(weight.dtype))
            layer_sparsity[name] = round(1 - masks[name].float().mean().item(), 4)
    zeroed = sum(int((~mask).sum()) for mask in masks.values())
    candidates = sum(mask.numel() for mask in masks.values())
    context.details.update(
        pruned_layers=len(layers),
        skipped_layers=skipped,
        sparsity_of_pruned_layers=round(zeroed / max(candidates, 1), 4),
        layer_sparsity=layer_sparsity,
    )
    logger.info(
        "prune %s (%s, %s): zeroed %d of %d weights in %d layers; %d layers skipped",
        config.structure, config.importance, config.scope, zeroed, candidates, len(layers), len(skipped),
    )
