"""Accuracy-aware quantization: let the most sensitive layers fall back (to fp32 within a size budget,
or to int8 weight-only, which costs speed instead) until a fidelity target holds on the calibration data.

No library does this for onnxruntime graphs (neural-compressor's tuner would, at the cost of a large
dependency), and it is a short loop: measure each layer's gain alone, then add layers by gain per unit
of cost (extra bytes for fp32, multiply-adds moved off the int8 kernels for weight-only).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workers.engine.techniques.quantize.layers import WeightLayer

logger = logging.getLogger(__name__)

# Bounds the time a job spends here: each examined layer costs one build and one probe.
MAX_EXAMINED_LAYERS = 64


@dataclass(frozen=True)
class Sensitivities:
    """Each examined layer's fidelity gain when it alone falls back, and what that costs."""

    gains: dict[str, float]  # node -> fidelity with it fallen back, minus the fully quantized fidelity
    extra: dict[str, int]  # node -> cost: extra bytes (fp32), weights (weight_only) or activation values (outliers)


@dataclass
class FallbackResult:
    path: Path
    fidelity: float
    fallen_back: list[WeightLayer] = field(default_factory=list)
    target_met: bool = False
    trials: int = 1


def fall_back(
    build: Callable[[frozenset[str], Path], Path],
    probe: Callable[[Path], float],
    layers: list[WeightLayer],
    target: float,
    max_bytes: int | None,
    work_dir: Path,
    on_progress: Callable[[float], None],
    mode: Literal["fp32", "weight_only", "outliers"] = "fp32",
    sensitivities: Callable[[Callable[[], Sensitivities]], Sensitivities] | None = None,
) -> FallbackResult:
    """`build(fallback_nodes, path)` writes a model; `probe(path)` gives its fidelity. Embeddings never
    fall back: at int8 per row they cost ~1e-5 of cosine, and they are the largest tables.

    mode "fp32" ranks layers by gain per extra byte and keeps the size under `max_bytes`; modes
    "weight_only" and "outliers" (nearly) keep the size and have no budget: they stop when the target
    holds or no layer helps. weight_only ranks by gain per weight (a MatMul's multiply-adds per token
    moved off the int8 kernels), outliers by gain per activation value its split passes over per
    token (input plus output features: the split's cost is those memory-bound passes).

    `sensitivities(measure)` gives the per-layer gains (without it, `measure()`); a goal search hands a
    cache, so candidates that differ only in their target (or what follows the step) measure them once."""
    work_dir.mkdir(parents=True, exist_ok=True)
    best = build(frozenset(), work_dir / "all.onnx")
    result = FallbackResult(best, probe(best))
    logger.info("fully quantized: fidelity %.5f (target %.5f)", result.fidelity, target)
    if result.fidelity >= target:
        result.target_met = True
        return result
    base_size = best.stat().st_size
    candidates = [layer for layer in layers if not layer.is_embedding]
    if len(candidates) > MAX_EXAMINED_LAYERS:
        # The largest layers first: they carry most of the compute and of the quantization error.
        candidates = sorted(candidates, key=lambda layer: layer.numel, reverse=True)[:MAX_EXAMINED_LAYERS]
        logger.info("examining the %d largest of the quantized layers", MAX_EXAMINED_LAYERS)
    trial_path = work_dir / "trial.onnx"
    measured = []

    def measure() -> Sensitivities:
        gains: dict[str, float] = {}
        extra: dict[str, int] = {}
        for index, layer in enumerate(candidates, start=1):
            build(frozenset({layer.node}), trial_path)
            gains[layer.node] = probe(trial_path) - result.fidelity
            extra[layer.node] = {
                "fp32": max(trial_path.stat().st_size - base_size, 1), "weight_only": layer.numel,
                "outliers": layer.width,
            }[mode]
            on_progress(0.5 * index / len(candidates))
        measured.append(True)
        return Sensitivities(gains, extra)

    known = measure() if sensitivities is None else sensitivities(measure)
    gains, extra = known.gains, known.extra
    if measured:
        result.trials += len(candidates)
    else:
        logger.info("layer sensitivities reused from an earlier candidate with the same quantization")
    order = sorted(
        (layer for layer in candidates if gains[layer.node] > 0),
        key=lambda layer: gains[layer.node] / extra[layer.node],
        reverse=True,
    )
    logger.info(
        "most sensitive layers: %s",
        ", ".join(f"{layer.module} (+{gains[layer.node]:.5f})" for layer in sorted(
            candidates, key=lambda layer: gains[layer.node], reverse=True)[:5]),
    )
    chosen: list[WeightLayer] = []
    size = base_size
    for index, layer in enumerate(order, start=1):
        on_progress(0.5 + 0.5 * index / len(order))
        # Sizes add up (each layer's fp32 weight replaces its int8 one), so a layer that would
        # break the budget is passed over without building it.
        if mode == "fp32" and max_bytes is not None and size + extra[layer.node] > max_bytes:
            continue
        path = work_dir / f"fallback-{len(chosen) + 1:02d}.onnx"
        build(frozenset(chosen_layer.node for chosen_layer in [*chosen, layer]), path)
        result.trials += 1
        fidelity = probe(path)
        if fidelity <= result.fidelity:
            continue
        chosen.append(layer)
        size = path.stat().st_size
        result.path, result.fidelity, result.fallen_back = path, fidelity, list(chosen)
        logger.info("%s falls back to %s: fidelity %.5f, %.2f MB", layer.module, mode, fidelity, size / 1e6)
        if fidelity >= target:
            result.target_met = True
            break
    return result
