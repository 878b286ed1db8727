"""The numerics of weight sharing: weighted 1-D k-means, nearest-codebook rounding, GPTQ-style error
compensation with a non-uniform codebook, and the calibration statistics it needs.
"""

import logging

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.devices import module_device, to_device
from workers.engine.errors import EngineUserError

logger = logging.getLogger(__name__)

_CALIBRATION_BATCH = 16


def kmeans_1d(
    values: np.ndarray, k: int, weights: np.ndarray | None = None, max_iterations: int = 100
) -> tuple[np.ndarray, int]:
    """Weighted Lloyd k-means of scalars: sorted centroids (float32) and the iterations run.

    Hand-written because in 1-D Lloyd needs no distance matrix: on sorted values each cluster is a
    contiguous run cut at the midpoints between centroids, so one np.searchsorted and prefix sums
    give every cluster's weighted mean in O(k log n) per iteration, exactly. scikit-learn's KMeans
    is not a dependency and takes minutes on the 12 M values of an embedding table.
    """
    order = np.argsort(values, kind="stable")
    x = values[order].astype(np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)[order]
    distinct = np.unique(x)
    if distinct.size <= k:
        return distinct.astype(np.float32), 0
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    cum_wx = np.concatenate([[0.0], np.cumsum(w * x)])
    # Start at the weighted quantiles: dense regions of important weights get more centroids.
    targets = (np.arange(k) + 0.5) / k * cum_w[-1]
    centroids = np.unique(x[np.minimum(np.searchsorted(cum_w[1:], targets), x.size - 1)])
    if centroids.size < k:
        # Heavy weights can put several quantiles on one value; top up with evenly ranked distinct
        # values so Lloyd starts from k centroids.
        spread = distinct[np.linspace(0, distinct.size - 1, k).round().astype(np.int64)]
        extra = np.setdiff1d(spread, centroids)[: k - centroids.size]
        centroids = np.sort(np.concatenate([centroids, extra]))
    cuts = None
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        new_cuts = np.searchsorted(x, (centroids[1:] + centroids[:-1]) / 2, side="right")
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
        edges = np.concatenate([[0], cuts, [x.size]])
        mass = cum_w[edges[1:]] - cum_w[edges[:-1]]
        # An empty (or weightless) cluster keeps its centroid rather than dividing by zero.
        centroids = np.where(mass > 0, (cum_wx[edges[1:]] - cum_wx[edges[:-1]]) / np.maximum(mass, 1e-300), centroids)
        centroids = np.sort(centroids)
    return np.unique(centroids.astype(np.float32)), iteration


def nearest_centroid(weights: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Each element replaced by the closest value of the sorted `codebook`."""
    midpoints = (codebook[1:] + codebook[:-1]) / 2
    # searchsorted, not bucketize: same result, but bucketize wakes the thread pool on every call,
    # which made GPTQ's column loop ~100x slower on a busy 2-core machine.
    return codebook[torch.searchsorted(midpoints, weights.contiguous())]


def gptq_codebook(
    weight: torch.Tensor, hessian: torch.Tensor, codebook: torch.Tensor, block_size: int = 128, damping: float = 0.01
) -> torch.Tensor:
    """Rounds `weight` (out_features, in_features) to `codebook` values column by column, each time
    moving the rounding error onto the columns not yet rounded so that the layer's outputs on the
    calibration inputs (whose second moment is `hessian`) change least (Frantar et al., GPTQ, 2022).

    Written out here because GPTQ implementations (auto-gptq, llm-compressor) round to a uniform
    integer grid; weight sharing needs the nearest value of an arbitrary codebook.
    """
    # The column loop is thousands of tiny ops: waking a thread pool for each costs more than the op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq(weight, hessian, codebook, block_size, damping)
    finally:
        torch.set_num_threads(threads)


def _gptq(
    weight: torch.Tensor, hessian: torch.Tensor, codebook: torch.Tensor, block_size: int, damping: float
) -> torch.Tensor:
    weight = weight.clone().float()
    hessian = hessian.clone().double()
    columns = weight.shape[1]
    # A column no calibration token ever activated: any rounding is free, so give it a unit diagonal.
    dead = torch.diagonal(hessian) <= 0
    hessian[dead, dead] = 1.0
    hessian += damping * torch.diagonal(hessian).mean() * torch.eye(columns, dtype=hessian.dtype, device=hessian.device)
    # The upper Cholesky factor of H^-1: row i holds the update for the columns after i.
    # float64 for the factorisations (the damped Hessian can still be ill-conditioned); LAPACK's
    # cholesky_inverse (potri) was ~50x slower here than a triangular solve.
    lower = torch.linalg.cholesky(hessian)
    inverse = torch.cholesky_solve(torch.eye(columns, dtype=hessian.dtype, device=hessian.device), lower)
    factor = torch.linalg.cholesky(inverse, upper=True).float()
    codebook = codebook.float()
    result = torch.empty_like(weight)
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = weight[:, start:end].clone()
        errors = torch.empty_like(block)
        local = factor[start:end, start:end]
        for i in range(end - start):
            column = block[:, i]
            rounded = nearest_centroid(column, codebook)
            result[:, start + i] = rounded
            error = (column - rounded) / local[i, i]
            block[:, i:] -= error[:, None] * local[i, i:][None, :]
            errors[:, i] = error
        # Lazy batch update (GPTQ's trick): the later blocks get this block's errors in one matmul.
        weight[:, end:] -= errors @ factor[start:end, end:]
    return result.float()


def collect_input_hessians(
    model: torch.nn.Module,
    modules: dict[str, torch.nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    input_names: list[str],
    texts: list[str],
    sequence_length: int,
) -> dict[str, torch.Tensor]:
    """Module name -> E[x xᵀ] of the module's input over the real (unpadded) tokens of `texts`."""
    if not texts:
        raise EngineUserError("error_compensation needs calibration texts; give a dataset or set it to false.")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(modules, 0)
    current_mask: list[torch.Tensor] = []

    def hook(name: str):
        def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            # Padded positions are not real inputs; counting them would bias every statistic.
            inputs, mask = args[0], current_mask[0]
            tokens = inputs[mask] if inputs.shape[:2] == mask.shape else inputs.reshape(-1, inputs.shape[-1])
            tokens = tokens.double()
            sums[name] = sums.get(name, 0) + tokens.T @ tokens
            counts[name] += tokens.shape[0]

        return record

    device = module_device(model)
    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            for start in range(0, len(texts), _CALIBRATION_BATCH):
                batch = tokenizer(
                    texts[start : start + _CALIBRATION_BATCH], padding=True, truncation=True,
                    max_length=sequence_length, return_tensors="pt",
                )
                batch = to_device(batch, device)
                current_mask[:] = [batch["attention_mask"].bool()]
                model(**{name: batch[name] for name in input_names if name in batch})
    finally:
        for handle in handles:
            handle.remove()
    tokens = max(counts.values(), default=0)
    logger.info("cluster: input statistics of %d layers from %d texts (%d tokens)", len(modules), len(texts), tokens)
    return {name: (sums[name] / counts[name]).float() for name in sums if counts[name] > 0}
