"""SmoothQuant-style scale migration (Xiao et al. 2023) on the torch model before export: each quantized
layer's input is divided per channel by s and its weight multiplied by s, so activation outliers move
into the weights, which are quantized per output channel and tolerate them better.

Why by hand: torchao's and llm-compressor's SmoothQuant fold s into a preceding LayerNorm, which is only
output-preserving in pre-LN models. In post-LN encoders (BERT) the LayerNorm output also feeds the
residual, and the FFN output projection follows GELU, so here the division stays an explicit per-channel
Mul in front of the layer (one elementwise op next to a matrix product, ~1% of its work).
"""

import copy
import logging

import torch
from transformers.pytorch_utils import Conv1D

from workers.engine.architectures.layer_groups import layer_group_pattern
from workers.engine.devices import module_device
from workers.engine.evaluation.runners import Batch
from workers.engine.techniques.quantize.layers import WeightLayer

logger = logging.getLogger(__name__)

# Floors keep s finite where a channel never fires or a weight column is all zero.
_PEAK_FLOOR = 1e-5
_SCALE_BOUNDS = (1e-2, 1e2)
_INVERSE_SCALE = "smooth_inverse_scale"
# Layer groups (layer_groups.py) left unsmoothed. The FFN output reads GELU outputs, whose outliers
# smoothing moves into weights that already hold the layer's largest values: on MiniLM smoothing it
# too at alpha 0.5 dropped int8_dynamic from 0.9959 to 0.9875 cosine.
NOT_SMOOTHED_GROUPS = ("ffn_output",)


def smoothing_targets(layers: list[WeightLayer], model_type: str) -> list[WeightLayer]:
    """The selected MatMuls worth smoothing: not embeddings, not in NOT_SMOOTHED_GROUPS."""
    patterns = [pattern for group in NOT_SMOOTHED_GROUPS if (pattern := layer_group_pattern(model_type, group))]
    return [
        layer for layer in layers
        if not layer.is_embedding and not any(pattern.search(layer.node) for pattern in patterns)
    ]


def _weight_columns_first(module: torch.nn.Module) -> torch.Tensor:
    """The weight as (in_features, out_features): Linear stores (out, in), GPT-2's Conv1D (in, out)."""
    return module.weight.T if isinstance(module, torch.nn.Linear) else module.weight


def _scale_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0] * getattr(module, _INVERSE_SCALE), *args[1:])


def activation_peaks(
    model: torch.nn.Module, names: list[str], batches: list[Batch]
) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """max |x_j| over every token of the calibration batches, per input channel j of each named layer,
    and the layers grouped by the input tensor they read (e.g. attention's query, key and value)."""
    peaks: dict[str, torch.Tensor] = {}
    # The tensors themselves, not their addresses: a freed tensor's memory is reused later in the
    # same forward, so equal data_ptr values would group unrelated layers.
    inputs: dict[str, torch.Tensor] = {}
    groups: list[list[str]] = []
    grouped = False
    device = module_device(model)
    handles = []

    def record(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            peak = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak
            if not grouped:
                inputs.setdefault(name, args[0])

        return hook

    for name in names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(record(name)))
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**{key: torch.from_numpy(value).to(device) for key, value in batch.items()})
                if not grouped:
                    for name in names:
                        group = next((group for group in groups if inputs[group[0]] is inputs[name]), None)
                        if group is None:
                            groups.append([name])
                        else:
                            group.append(name)
                    inputs.clear()
                    grouped = True
    finally:
        for handle in handles:
            handle.remove()
    return peaks, groups


def smooth_model(
    model: torch.nn.Module, names: list[str], batches: list[Batch], alpha: float
) -> tuple[torch.nn.Module, dict[str, float]]:
    """A smoothed copy of `model` (the original is untouched: it stays the fidelity reference) and, per
    layer, the largest activation peak divided by its smoothed value (how much the outliers shrank).

    Layers reading the same tensor share one s and one scale tensor: the exporter stores it once, so
    onnxruntime's common-subexpression pass merges their Mul and activation quantization back into one.
    """
    smoothed = copy.deepcopy(model).eval()
    peaks, groups = activation_peaks(smoothed, names, batches)
    shrink = {}
    for group in groups:
        modules = [smoothed.get_submodule(name) for name in group]
        for name, module in zip(group, modules, strict=True):
            if not isinstance(module, torch.nn.Linear | Conv1D):
                raise TypeError(f"smoothing supports Linear and Conv1D layers, not {type(module).__name__} ({name})")
        with torch.no_grad():
            x_peak = peaks[group[0]].clamp(min=_PEAK_FLOOR)
            w_peak = torch.stack(
                [_weight_columns_first(module).float().abs().amax(dim=1) for module in modules]
            ).amax(dim=0).clamp(min=_PEAK_FLOOR)
            scale = (x_peak.pow(alpha) / w_peak.pow(1 - alpha)).clamp(*_SCALE_BOUNDS)
            inverse = (1.0 / scale).to(modules[0].weight.dtype)
            for module in modules:
                column_scale = scale.to(module.weight.dtype)
                if isinstance(module, Conv1D):
                    column_scale = column_scale[:, None]
                # A new Parameter, so a weight tied to another module (GPT-2's lm_head) is untied, not rescaled.
                module.weight = torch.nn.Parameter(module.weight * column_scale)
                module.register_buffer(_INVERSE_SCALE, inverse)
                module.register_forward_pre_hook(_scale_input)
        for name in group:
            shrink[name] = float(x_peak.max() / (x_peak / scale).max())
    logger.info(
        "smoothed %d layers in %d input groups (alpha %.2f): activation peaks shrank %.1fx at the median",
        len(names), len(groups), alpha, float(torch.tensor(list(shrink.values())).median()) if shrink else 1.0,
    )
    return smoothed, shrink
