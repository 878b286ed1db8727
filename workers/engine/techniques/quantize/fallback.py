"""Accuracy-aware quantization: leave the most sensitive layers in fp32 until a fidelity target holds
on the calibration data, within a size budget.

No library does this for onnxruntime graphs (neural-compressor's tuner would, at the cost of a large
dependency), and it is a short loop: measure each layer's gain alone, then add layers by gain per
extra byte while the predicted size fits.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.engine.techniques.quantize.layers import WeightLayer

logger = logging.getLogger(__name__)


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
    max_bytes: int,
    work_dir: Path,
    on_progress: Callable[[float], None],
) -> FallbackResult:
    """`build(fallback_nodes, path)` writes a model; `probe(path)` gives its fidelity. Embeddings never
    fall back: at int8 per row they cost ~1e-5 of cosine, and they are the largest tables."""
    work_dir.mkdir(parents=True, exist_ok=True)
    best = build(frozenset(), work_dir / "all.onnx")
    result = FallbackResult(best, probe(best))
    logger.info("fully quantized: fidelity %.5f (target %.5f)", result.fidelity, target)
    if result.fidelity >= target:
        result.target_met = True
        return result
    base_size = best.stat().st_size
    candidates = [layer for layer in layers if not layer.is_embedding]
    gains: dict[str, float] = {}
    extra: dict[str, int] = {}
    trial_path = work_dir / "trial.onnx"
    for index, layer in enumerate(candidates, start=1):
        build(frozenset({layer.node}), trial_path)
        gains[layer.node] = probe(trial_path) - result.fidelity
        extra[layer.node] = max(trial_path.stat().st_size - base_size, 1)
        on_progress(0.5 * index / len(candidates))
    result.trials += len(candidates)
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
        if size + extra[layer.node] > max_bytes:
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
        logger.info("left %s in fp32: fidelity %.5f, %.2f MB", layer.module, fidelity, size / 1e6)
        if fidelity >= target:
            result.target_met = True
            break
    return result
