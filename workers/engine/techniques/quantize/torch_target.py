"""The `quantize` step for a job whose target runtime is torch: the model stays a transformers model,
in half precision or with torchao's quantized weights, and ships as safetensors whose config.json
carries the quantization_config, so plain `from_pretrained` reloads it (with torchao installed) onto
torchao's kernels.

Quantizing through transformers' own TorchAoConfig (save the float model, reload it quantized) rather
than calling torchao's quantize_ on the live model is deliberate: it is the path that writes a
quantization_config and serialises torchao's tensor subclasses, so the shipped folder is exactly what
a user's from_pretrained rebuilds.
"""

import logging
import re
import shutil

import torch

from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK
from workers.engine.config_folder import PRUNED_SHAPES_FILE
from workers.engine.devices import module_device
from workers.engine.errors import EngineUserError
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize.config import QuantizeConfig

logger = logging.getLogger(__name__)

# torchao's kernels are written for bf16 activations on the GPU (int4 and fp8 require them); on the
# CPU, bf16 matmuls are slow without AMX, so activations stay fp32 there.
_COMPUTE_DTYPE = {"cuda": torch.bfloat16, "cpu": torch.float32}
_CAST_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_INT4_GROUP_SIZE = 128


def _torchao_config(config: QuantizeConfig):
    # Imported here: only jobs with a torch target need torchao.
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    if config.scheme == "int8_weight_only":
        return Int8WeightOnlyConfig()
    if config.scheme == "int8_dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    if config.scheme == "int4_weight_only":
        return Int4WeightOnlyConfig(group_size=config.group_size or DEFAULT_INT4_GROUP_SIZE)
    if config.scheme == "fp8":
        # One scale per output row for weights and per token for activations: torchao's finer choice.
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    raise ValueError(f"scheme {config.scheme!r} has no torchao form")


def _skipped_modules(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the Linear layers the skip patterns match (exact names: transformers' own matching of
    modules_to_not_convert has changed between releases, exact names mean the same in all of them)."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(pattern.search(name) for pattern in compiled)
    ]


def _check_fp8_device(device: torch.device) -> None:
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise EngineUserError(
            f"fp8 needs fp8 tensor cores (compute capability 8.9 or newer: Ada, Hopper); this worker's GPU has "
            f"{major}.{minor}. Use int8_weight_only or bf16 for this GPU."
        )


def quantize_for_torch(config: QuantizeConfig, state: ModelState, context: StepContext) -> ModelState:
    model = state.torch_model
    device = module_device(model)
    if (state.config_dir / PRUNED_SHAPES_FILE).is_file():
        raise EngineUserError(
            "This model's layers have different widths (pruned heads, or neurons per layer), which transformers "
            "cannot rebuild from config.json, so it cannot ship as a quantized transformers folder; prune with scope "
            "'per_layer' (the same width in every layer), or use target runtime onnxruntime."
        )
    if config.scheme in _CAST_DTYPE:
        if config.skip:
            raise EngineUserError(
                f"skip does not apply to {config.scheme} on a torch target: a transformers model computes in one "
                "dtype; remove skip, or use a torchao scheme (int8_weight_only, fp8)"
            )
        dtype = _CAST_DTYPE[config.scheme]
        model = model.to(dtype)
        model.config.dtype = dtype
        context.details.update(scheme=config.scheme, compute_dtype=str(dtype).removeprefix("torch."), kernels="torch")
        context.placement["cast"] = str(device)
        return ModelState(task=state.task, config_dir=state.config_dir, torch_model=model)

    if config.scheme == "fp8":
        _check_fp8_device(device)
    from transformers import TorchAoConfig

    compute_dtype = _COMPUTE_DTYPE[device.type]
    skipped = _skipped_modules(model, config.skip)
    # transformers leaves the LM head and tied outputs alone on its own; the skip list adds the user's.
    quantization = TorchAoConfig(quant_type=_torchao_config(config), modules_to_not_convert=skipped or None)
    float_dir = context.work_dir / "float"
    model.save_pretrained(float_dir, safe_serialization=True)
    state.torch_model = None
    del model
    try:
        quantized = AUTO_CLASS_BY_TASK[state.task].from_pretrained(
            float_dir, quantization_config=quantization, dtype=compute_dtype, device_map=str(device),
        ).eval()
    finally:
        shutil.rmtree(float_dir, ignore_errors=True)
    quantized_layers = [
        name for name, module in quantized.named_modules()
        if isinstance(module, torch.nn.Linear) and type(module.weight).__name__ not in ("Parameter", "Tensor")
    ]
    if not quantized_layers:
        raise EngineUserError(
            f"{config.scheme} on a torch target quantizes nn.Linear layers through torchao, and this "
            f"{quantized.config.model_type} model has none left to quantize (GPT-2 keeps its weights in Conv1D "
            "layers, or skip matched them all); use fp16 / bf16, or target runtime onnxruntime."
        )
    context.details.update(
        scheme=config.scheme,
        kernels=f"torchao {type(quantization.quant_type).__name__}",
        compute_dtype=str(compute_dtype).removeprefix("torch."),
        layers_quantized=len(quantized_layers),
        left_layers=skipped,
        embeddings_quantized=False,
    )
    if config.scheme == "int4_weight_only":
        context.details["group_size"] = config.group_size or DEFAULT_INT4_GROUP_SIZE
    context.placement["quantization"] = str(device)
    logger.info(
        "quantize %s for torch on %s: %d Linear layers through torchao, %d skipped, activations in %s",
        config.scheme, device, len(quantized_layers), len(skipped), compute_dtype,
    )
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=quantized)
