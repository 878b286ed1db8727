"""Quantization-aware training for the quantize step's onnxruntime schemes: a copy of the model is
fine-tuned against the original (the distillation loss of `workers.engine.training`) while every
selected layer computes with the rounding onnxruntime will apply, then exported and quantized as usual.

The fake quantizers reproduce onnxruntime's grids exactly, so the weights training settles on are
the ones onnxruntime's rounding then keeps:
- int8 weights (int8_dynamic, int8_static, and int8 embeddings): symmetric, one scale per output
  channel (per row for an embedding), scale = max|w| / 127, values in [-127, 127];
- 4-bit weights (int4_weight_only, MatMulNBits and GatherBlockQuantized): asymmetric in groups of
  group_size along the input axis, the range widened to hold 0, scale = (max - min) / 15;
- activations (int8 schemes): asymmetric uint8 with one scale per tensor, widened to hold 0. int8_static
  fixes each tensor's range from the calibration texts before training and hands that very scale and
  zero point to onnxruntime (TensorQuantOverrides); int8_dynamic recomputes it per call, as
  DynamicQuantizeLinear does.

torchao supplies the module swap (FakeQuantizedLinear / FakeQuantizedEmbedding), the qparam choice and
the straight-through rounding. Why the quantizer modules are ours: torchao's IntxFakeQuantizer has no
per-tensor activation granularity (per token, per axis or per group only), and its symmetric int8 uses
[-128, 127] with scale max / 127.5 where onnxruntime uses [-127, 127] and max / 127; a grid off by a
fraction of a step would throw away what training learned.
"""

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torchao.quantization.qat import FakeQuantizedEmbedding, FakeQuantizedLinear
from torchao.quantization.qat.fake_quantizer import FakeQuantizerBase
from torchao.quantization.quant_primitives import MappingType, _fake_quantize_affine, choose_qparams_affine

from workers.engine.devices import module_device
from workers.engine.evaluation.runners import Batch
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize.config import DEFAULT_GROUP_SIZE, QuantizeConfig
from workers.engine.techniques.quantize.layers import WeightLayer
from workers.engine.techniques.quantize.smoothing import activation_peaks
from workers.engine.training.recovery_step import recover_step

logger = logging.getLogger(__name__)

# int8_static's activation range before training: this quantile of each tensor's calibration values
# at each end (onnxruntime's percentile calibration keeps 99.999% too), on at most this many samples.
RANGE_QUANTILE = 1e-5
_RANGE_SAMPLES = 2_000_000
_UINT8 = (0, 255)
_EPS = float(torch.finfo(torch.float32).eps)


def _fake_quantize(x: torch.Tensor, block_size: tuple[int, ...], mapping: MappingType, bounds: tuple[int, int]):
    """x rounded to the grid onnxruntime would choose for it, with a straight-through gradient."""
    quant_min, quant_max = bounds
    with torch.no_grad():
        scale, zero_point = choose_qparams_affine(
            x.float(), mapping, block_size, torch.int32, quant_min, quant_max, eps=_EPS, scale_dtype=torch.float32
        )
    return _fake_quantize_affine(x, block_size, scale, zero_point, torch.int32, quant_min, quant_max).to(x.dtype)


class WeightFakeQuantizer(FakeQuantizerBase):
    """int8: symmetric per row, [-127, 127]. 4 bits: asymmetric groups along the row, [0, 15]."""

    def __init__(self, bits: int, group_size: int | None):
        super().__init__()
        self.bits, self.group_size, self.enabled = bits, group_size, True

    def __repr__(self) -> str:
        return f"WeightFakeQuantizer(bits={self.bits}, group_size={self.group_size})"

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if self.bits == 8:
            return _fake_quantize(weight, (1, weight.shape[1]), MappingType.SYMMETRIC, (-127, 127))
        return _fake_quantize(weight, (1, self.group_size), MappingType.ASYMMETRIC, (0, 15))


class ActivationFakeQuantizer(FakeQuantizerBase):
    """uint8 with one scale per tensor: fixed (int8_static) or recomputed per call (int8_dynamic)."""

    def __init__(self, scale: float | None = None, zero_point: int | None = None):
        super().__init__()
        self.enabled = True
        self.static = scale is not None
        if self.static:
            self.register_buffer("scale", torch.tensor([scale], dtype=torch.float32))
            self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int32))

    def __repr__(self) -> str:
        if self.static:
            return f"ActivationFakeQuantizer(scale={self.scale.item():.4g}, zero_point={self.zero_point.item()})"
        return "ActivationFakeQuantizer(dynamic)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.static:
            return _fake_quantize(x, tuple(x.shape), MappingType.ASYMMETRIC, _UINT8)
        block = tuple(x.shape)
        return _fake_quantize_affine(x, block, self.scale, self.zero_point, torch.int32, *_UINT8).to(x.dtype)


def uint8_qparams(low: float, high: float) -> tuple[float, int]:
    """onnxruntime's compute_scale_zp for uint8: the range widened to hold 0, scale (high - low) / 255."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero_point = int(np.clip(np.rint(-low / scale), *_UINT8))
    return float(np.float32(scale)), zero_point


@dataclass(frozen=True)
class TrainedModel:
    model: torch.nn.Module  # plain Linear and Embedding modules again, weights trained
    # int8_static: per selected layer (module name), the (scale, zero point) its input was trained with
    activation_qparams: dict[str, tuple[float, int]]
    layers_trained: int


def _input_ranges(
    model: torch.nn.Module, groups: list[list[str]], batches: list[Batch]
) -> dict[str, tuple[float, int]]:
    """Per layer, the uint8 qparams of its input's range over the calibration batches, clipped at
    RANGE_QUANTILE at each end; layers reading one tensor share them, as onnxruntime's one QDQ pair."""
    samples: dict[str, list[torch.Tensor]] = {group[0]: [] for group in groups}
    generator = torch.Generator().manual_seed(0)
    device = module_device(model)

    def record(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            values = args[0].detach().float().reshape(-1).cpu()
            share = max(1, _RANGE_SAMPLES // max(1, len(batches)))
            if values.numel() > share:
                values = values[torch.randint(values.numel(), (share,), generator=generator)]
            samples[name].append(values)

        return hook

    handles = [model.get_submodule(group[0]).register_forward_pre_hook(record(group[0])) for group in groups]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**{key: torch.from_numpy(value).to(device) for key, value in batch.items()})
    finally:
        for handle in handles:
            handle.remove()
    qparams = {}
    for group in groups:
        values = torch.cat(samples[group[0]])
        low, high = torch.quantile(values, torch.tensor([RANGE_QUANTILE, 1 - RANGE_QUANTILE])).tolist()
        for name in group:
            qparams[name] = uint8_qparams(low, high)
    return qparams


def _swap(model: torch.nn.Module, name: str, replacement: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)


@dataclass
class FakeQuantized:
    model: torch.nn.Module  # a copy of the original, its selected layers fake-quantized
    linears: list[str]
    embeddings: list[str]
    activation_qparams: dict[str, tuple[float, int]]

    def plain(self) -> torch.nn.Module:
        """The model with plain Linear and Embedding modules again (the trained weights kept)."""
        for name in self.linears:
            _swap(self.model, name, self.model.get_submodule(name).to_linear())
        for name in self.embeddings:
            _swap(self.model, name, self.model.get_submodule(name).to_embedding())
        return self.model.eval()


def fake_quantized_copy(
    config: QuantizeConfig, original: torch.nn.Module, selected: list[WeightLayer], batches: list[Batch]
) -> FakeQuantized:
    """A copy of `original` whose selected layers compute as onnxruntime will compute them."""
    student = copy.deepcopy(original).eval()
    modules = dict(student.named_modules())
    bits = 4 if config.scheme == "int4_weight_only" else 8
    group_size = (config.group_size or DEFAULT_GROUP_SIZE) if bits == 4 else None
    linears = [layer.module for layer in selected if not layer.is_embedding and isinstance(
        modules.get(layer.module), torch.nn.Linear)]
    embeddings = [layer.module for layer in selected if layer.is_embedding and isinstance(
        modules.get(layer.module), torch.nn.Embedding)]
    untrained = len(selected) - len(linears) - len(embeddings)
    if untrained:
        logger.info("qat: %d selected layers are neither Linear nor Embedding modules; they train unquantized",
                    untrained)

    activation_qparams: dict[str, tuple[float, int]] = {}
    if config.scheme == "int8_static" and linears:
        _, groups = activation_peaks(student, linears, batches[:1])
        activation_qparams = _input_ranges(student, groups, batches)
        shared = {}  # one quantizer per input tensor, like onnxruntime's one QDQ pair per tensor
        for group in groups:
            quantizer = ActivationFakeQuantizer(*activation_qparams[group[0]])
            shared.update({name: quantizer for name in group})
    for name in linears:
        fake = FakeQuantizedLinear.from_linear(modules[name])
        fake.weight_fake_quantizer = WeightFakeQuantizer(bits, group_size)
        if config.scheme == "int8_static":
            fake.activation_fake_quantizer = shared[name]
        elif config.scheme == "int8_dynamic":
            fake.activation_fake_quantizer = ActivationFakeQuantizer()
        _swap(student, name, fake)
    for name in embeddings:
        fake = FakeQuantizedEmbedding.from_embedding(modules[name])
        fake.weight_fake_quantizer = WeightFakeQuantizer(bits, group_size)
        _swap(student, name, fake)
    return FakeQuantized(student, linears, embeddings, activation_qparams)


def quantization_aware_training(
    config: QuantizeConfig, state: ModelState, context: StepContext, selected: list[WeightLayer], batches: list[Batch]
) -> TrainedModel:
    """Trains a copy of state.torch_model with the selected layers fake-quantized; the original stays
    untouched (it is the teacher, and the fidelity reference after)."""
    fake = fake_quantized_copy(config, state.torch_model, selected, batches)
    recover_step(fake.model, state.torch_model, config.qat, state, context, progress_span=(0.05, 0.2))
    return TrainedModel(fake.plain(), fake.activation_qparams, len(fake.linears) + len(fake.embeddings))
