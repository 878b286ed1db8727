"""The `low_rank` technique: replaces Linear layers (and GPT-2's Conv1D) by two thinner ones from a
truncated SVD, W ≈ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

On its own it costs a lot of fidelity: on all-MiniLM-L6-v2, SVD keeping 50% of the parameters gave
a mean cosine of 0.37. Use an `energy` close to 1, or set `recover` (fine-tuning with the
distillation loss against the original) before shipping.
"""

import copy
import logging
import re
from collections import Counter

import torch
from transformers.pytorch_utils import Conv1D

from workers.engine.devices import module_device
from workers.engine.training.recovery_step import recover_step
from workers.engine.techniques.low_rank_config import LowRankConfig
from workers.engine.state import ModelState, StepContext

logger = logging.getLogger(__name__)

class LowRankLinear(torch.nn.Module):
    """A Linear layer stored as two thinner ones: forward(x) = up(down(x)), with the original bias on `up`."""

    def __init__(self, down_weight: torch.Tensor, up_weight: torch.Tensor, bias: torch.nn.Parameter | None):
        super().__init__()
        rank, in_features = down_weight.shape
        out_features = up_weight.shape[0]
        # Built on the meta device so no throwaway initialisation runs; every parameter is replaced below.
        self.down = torch.nn.Linear(in_features, rank, bias=False, device="meta")
        self.up = torch.nn.Linear(rank, out_features, bias=bias is not None, device="meta")
        self.down.weight = torch.nn.Parameter(down_weight)
        self.up.weight = torch.nn.Parameter(up_weight)
        if bias is not None:
            self.up.bias = bias

    @property
    def in_features(self) -> int:
        return self.down.in_features

    @property
    def out_features(self) -> int:
        return self.up.out_features

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _linear_weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features), whatever the module's own layout."""
    # Conv1D computes x @ W, so it stores W as (in, out): the transpose of a Linear's.
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def _rank(config: LowRankConfig, singular_values: torch.Tensor) -> int:
    if config.rank_fraction is not None:
        return max(1, round(config.rank_fraction * singular_values.numel()))
    energies = singular_values.double() ** 2
    total = energies.sum()
    if total == 0:
        return 1
    shares = energies.cumsum(0) / total
    # The smallest r with shares[r - 1] >= energy; the clamp absorbs rounding in the last share.
    return min(int((shares < config.energy).sum()) + 1, singular_values.numel())


def _factorise(module: torch.nn.Module, config: LowRankConfig) -> LowRankLinear | None:
    """The factorised layer, or None when it would hold at least as many parameters as the original."""
    weight = _linear_weight(module).detach()
    out_features, in_features = weight.shape
    # float32 at least: half-precision SVD is unsupported or inaccurate.
    U, S, Vh = torch.linalg.svd(weight.to(torch.promote_types(weight.dtype, torch.float32)), full_matrices=False)
    rank = _rank(config, S)
    if rank * (in_features + out_features) >= in_features * out_features:
        return None
    root = S[:rank].sqrt()
    down = (root[:, None] * Vh[:rank]).to(weight.dtype).contiguous()
    up = (U[:, :rank] * root[None, :]).to(weight.dtype).contiguous()
    return LowRankLinear(down, up, module.bias)


def apply_low_rank(config: LowRankConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("low_rank needs a torch model.")
    model = state.torch_model
    skip = [re.compile(pattern) for pattern in config.skip]
    layers = [
        (name, module) for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))
    ]
    candidates = [(name, module) for name, module in layers if not any(pattern.search(name) for pattern in skip)]
    # A weight shared with another module (tied embeddings) costs nothing extra; factorising it would
    # untie it and add parameters.
    uses = Counter(id(parameter) for _, parameter in model.named_parameters(remove_duplicate=False))
    parameters_before = sum(parameter.numel() for parameter in model.parameters())

    teacher = copy.deepcopy(model) if config.recover is not None else None
    share = 0.5 if teacher is not None else 1.0
    factorised = 0
    with torch.no_grad():
        for index, (name, module) in enumerate(candidates):
            replacement = None if uses[id(module.weight)] > 1 else _factorise(module, config)
            if replacement is not None:
                parent_name, _, child_name = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child_name, replacement)
                factorised += 1
            context.on_progress(share * (index + 1) / len(candidates))

    logger.info(
        "low_rank: factorised %d layers, kept %d whole (%d would not shrink, %d skipped by pattern); "
        "parameters %d -> %d",
        factorised, len(layers) - factorised, len(candidates) - factorised, len(layers) - len(candidates),
        parameters_before, sum(parameter.numel() for parameter in model.parameters()),
    )
    context.placement["factorisation"] = str(module_device(model))
    if teacher is not None:
        recover_step(model, teacher, config.recover, state, context, progress_span=(0.5, 1.0))
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=model)
