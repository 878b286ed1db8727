"""The `quantize` technique: exports the model to ONNX and quantizes the selected layers with the
chosen scheme (int8 dynamic/static/weight-only, int4 weight-only, fp16/bf16), optionally falling
back layer by layer to reach a fidelity target. See config.py for the params and schemes.py for the
kernels each scheme uses.
"""

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from workers.engine.evaluation.calibration import DEFAULT_MAX_TEXTS, FidelityProbe, calibration_batches
from workers.engine.evaluation.runners import Batch
from workers.engine.export.onnx import export_onnx
from workers.engine.loading import model_input_names
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize.config import DEFAULT_GROUP_SIZE, DEFAULT_MAX_SIZE_RATIO, QuantizeConfig
from workers.engine.techniques.quantize.fallback import Sensitivities, fall_back
from workers.engine.techniques.quantize.layers import WeightLayer, prepare_graph, select_layers, weight_layers
from workers.engine.techniques.quantize.outliers import input_peaks, write_split
from workers.engine.techniques.quantize.qat import quantization_aware_training
from workers.engine.techniques.quantize.schemes import BuildInputs, build
from workers.engine.techniques.quantize.smoothing import smooth_model, smoothing_targets
from workers.engine.techniques.quantize.executorch_target import quantize_for_executorch
from workers.engine.techniques.quantize.torch_target import quantize_for_torch

__all__ = ["apply_quantize"]

logger = logging.getLogger(__name__)

# Lists of layer names longer than this are reported as counts only.
_NAMES_LISTED = 12
# The fallback builds and probes one model per examined layer, so its probe texts are capped to bound
# a job's time (MiniLM: 36 layers, ~130 s on 2 busy cores with 64 texts).
FALLBACK_MAX_TEXTS = 64


def _names(layers: list[WeightLayer]) -> list[str] | None:
    return [layer.module for layer in layers] if len(layers) <= _NAMES_LISTED else None


def _needs_calibration(config: QuantizeConfig) -> bool:
    return (
        config.scheme == "int8_static"
        or config.target_fidelity is not None
        or config.smooth_alpha is not None
        or bool(config.outlier_channels)
        or config.qat is not None
    )


def _same_layers(prepared: Path, selected: list[WeightLayer], what: str) -> list[WeightLayer]:
    """The selected layers as they are in another export of the same architecture (matched by node)."""
    nodes = {layer.node for layer in selected}
    graph = onnx.load(str(prepared), load_external_data=False)
    layers = [layer for layer in weight_layers(graph) if layer.node in nodes]
    if len(layers) != len(selected):
        raise RuntimeError(f"The {what} export lost quantizable layers; its graph differs from the original's.")
    return layers


def _trained_graph(
    config: QuantizeConfig,
    state: ModelState,
    context: StepContext,
    selected: list[WeightLayer],
    calibration: list[Batch],
    input_names: list[str],
) -> tuple[Path, list[WeightLayer], dict[str, tuple[float, int]]]:
    """Quantization-aware training, then the trained copy's prepared export, its selected layers, and
    int8_static's trained activation qparams keyed by the ONNX tensor each MatMul reads."""
    trained = quantization_aware_training(config, state, context, selected, calibration)
    exported = export_onnx(trained.model, state.task, input_names, context.work_dir / "model_qat.onnx")
    prepared = prepare_graph(exported, context.work_dir / "model_qat_prepared.onnx")
    exported.unlink()
    layers = _same_layers(prepared, selected, "trained")
    graph = onnx.load(str(prepared), load_external_data=False).graph
    reads = {node.name: node.input[0] for node in graph.node if node.input}
    overrides = {
        reads[layer.node]: trained.activation_qparams[layer.module]
        for layer in layers if layer.module in trained.activation_qparams
    }
    context.details["qat"] = {
        **context.details.pop("recovery"),
        "layers_trained": trained.layers_trained,
        "activation_ranges_fixed": len(overrides),
    }
    context.placement["qat"] = context.placement.pop("recovery")
    return prepared, layers, overrides


def _smoothed_graph(
    config: QuantizeConfig,
    state: ModelState,
    context: StepContext,
    selected: list[WeightLayer],
    calibration: list[Batch],
    input_names: list[str],
) -> tuple[Path, list[WeightLayer]]:
    """Exports a smoothed copy of the model; returns its prepared graph and the selected layers in it."""
    model = state.torch_model
    targets = smoothing_targets(selected, model.config.model_type)
    smoothed, shrink = smooth_model(model, [layer.module for layer in targets], calibration, config.smooth_alpha)
    exported = export_onnx(smoothed, state.task, input_names, context.work_dir / "model_smoothed.onnx")
    del smoothed
    prepared = prepare_graph(exported, context.work_dir / "model_smoothed_prepared.onnx")
    exported.unlink()
    layers = _same_layers(prepared, selected, "smoothed")
    context.details.update(
        smooth_alpha=config.smooth_alpha,
        smoothed_layers=len(targets),
        smoothing_peak_reduction_median=round(sorted(shrink.values())[len(shrink) // 2], 3) if shrink else None,
    )
    return prepared, layers


def _shared_sensitivities(
    config: QuantizeConfig, context: StepContext, batches: int
) -> Callable[[Callable[[], Sensitivities]], Sensitivities] | None:
    """In a goal search, the fallback's per-layer gains are measured once for every candidate that
    quantizes the same way: only the target and the size bound may differ, and the gains depend on neither."""
    if context.reuse is None:
        return None
    same_quantization = config.model_dump(mode="json", exclude={"target_fidelity", "max_size_ratio", "time_limit_seconds"})
    key = (json.dumps(same_quantization, sort_keys=True), batches)
    return lambda measure: context.reuse.value("fallback_sensitivities", key, measure)


def apply_quantize(config: QuantizeConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("quantize needs a torch model to export.")
    if context.target.runtime == "torch":
        return quantize_for_torch(config, state, context)
    if context.target.runtime == "executorch":
        return quantize_for_executorch(config, state, context)
    model = state.torch_model
    input_names = model_input_names(model, context.tokenizer)
    if context.reuse is not None:
        # The untouched original: every candidate of a goal search shares one export, read only.
        fp32_path = context.reuse.file(
            f"{state.task}-fp32.onnx", lambda path: export_onnx(model, state.task, input_names, path)
        )
    else:
        fp32_path = export_onnx(model, state.task, input_names, context.work_dir / "model_fp32.onnx")
    prepared = prepare_graph(fp32_path, context.work_dir / "model_prepared.onnx")
    context.on_progress(0.2)

    # load_external_data=False: only node and initializer metadata are needed here.
    layers = weight_layers(onnx.load(str(prepared), load_external_data=False))
    selected, left = select_layers(layers, config, model.config.model_type)
    calibration: list[Batch] = []
    if _needs_calibration(config):
        if not context.calibration_texts:
            raise ValueError(f"quantize {config.scheme} with these params needs calibration texts; none were given.")
        max_texts = FALLBACK_MAX_TEXTS if config.target_fidelity is not None else DEFAULT_MAX_TEXTS
        def make_batches() -> list[Batch]:
            return calibration_batches(
                context.tokenizer, context.calibration_texts, context.sequence_length, input_names, max_texts
            )

        calibration = make_batches() if context.reuse is None else context.reuse.value(
            "calibration_batches", (tuple(input_names), max_texts, context.sequence_length), make_batches
        )
    if config.smooth_alpha is not None:
        prepared, selected = _smoothed_graph(config, state, context, selected, calibration, input_names)
    activation_qparams: dict[str, tuple[float, int]] = {}
    if config.qat is not None:
        prepared, selected, activation_qparams = _trained_graph(
            config, state, context, selected, calibration, input_names
        )
    peaks = None
    if config.outlier_channels or config.fallback == "outliers":
        matmuls = [layer for layer in selected if not layer.is_embedding]
        peaks = input_peaks(onnx.load(str(prepared)), matmuls, calibration)
        context.details["outlier_channels"] = config.channels_apart()
        if config.splits_every_layer():
            split = context.work_dir / "model_outliers_apart.onnx"
            side_nodes = write_split(prepared, matmuls, peaks, config.channels_apart(), split)
            prepared = split
            context.details["outlier_split_layers"] = len(side_nodes)
    context.on_progress(0.3)
    inputs = BuildInputs(
        prepared=prepared, layers=selected, config=config, calibration=calibration, peaks=peaks,
        activation_qparams=activation_qparams,
    )
    output_path = context.work_dir / "model.onnx"
    details = context.details
    if config.target_fidelity is None:
        build(inputs, output_path)
    else:
        started = time.monotonic()
        # Candidates are judged on the target's own onnxruntime provider (its device, when onnxruntime).
        probe = FidelityProbe(model, state.task, calibration, context.work_dir / "fidelity", context.target.device)
        ratio = config.max_size_ratio or DEFAULT_MAX_SIZE_RATIO
        outcome = fall_back(
            lambda fallback, path: build(inputs, path, fallback),
            probe,
            selected,
            config.target_fidelity,
            int(ratio * fp32_path.stat().st_size) if config.fallback == "fp32" else None,
            context.work_dir / "fallback",
            lambda fraction: context.on_progress(0.3 + 0.65 * fraction),
            mode=config.fallback,
            sensitivities=_shared_sensitivities(config, context, len(calibration)),
        )
        probe.remove()
        shutil.move(outcome.path, output_path)
        shutil.rmtree(context.work_dir / "fallback", ignore_errors=True)
        if config.fallback == "fp32":
            fallen = {layer.node for layer in outcome.fallen_back}
            selected = [layer for layer in selected if layer.node not in fallen]
            left = [*left, *outcome.fallen_back]
        details.update(
            target_fidelity=config.target_fidelity,
            calibration_fidelity=round(outcome.fidelity, 6),
            calibration_texts=probe.num_samples,
            target_met=outcome.target_met,
            fallback=config.fallback,
            fallback_layers=[layer.module for layer in outcome.fallen_back],
            fallback_trials=outcome.trials,
            fallback_seconds=round(time.monotonic() - started, 1),
        )
        if not outcome.target_met:
            logger.warning(
                "target fidelity %.4f not reached by falling back to %s: best %.5f",
                config.target_fidelity, config.fallback, outcome.fidelity,
            )

    embeddings = [layer for layer in selected if layer.is_embedding]
    details.update(
        scheme=config.scheme,
        layers_quantized=len(selected),
        layers_left=len(left),
        quantized_layers=_names(selected),
        left_layers=_names(left),
        embeddings_quantized=bool(embeddings),
    )
    # onnxruntime's quantizers and the exporter work on the CPU; calibration and fallback trials run
    # the ONNX model where the job's target runs it.
    context.placement.update(export="cpu", quantization="cpu")
    if config.target_fidelity is not None:
        context.placement["fidelity_trials"] = context.target.device
    if config.scheme == "int4_weight_only":
        details["group_size"] = config.group_size or DEFAULT_GROUP_SIZE
        details["algorithm"] = config.algorithm or "rtn"
    logger.info(
        "quantize %s: %d layers quantized (%d embeddings), %d left as they are; %.2f MB -> %.2f MB",
        config.scheme, len(selected), len(embeddings), len(left),
        fp32_path.stat().st_size / 1e6, output_path.stat().st_size / 1e6,
    )
    context.on_progress(1.0)
    # The torch model is dropped: nothing after an ONNX-producing step works on it, and it is
    # the largest thing in memory.
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=None, onnx_path=output_path)
