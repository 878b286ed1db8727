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


def skipped_linear_layers(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the Linear layers the skip patterns (regular expressions) match: the torch-side
    targets (torch, executorch) name each layer they leave out."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(pattern.search(name) for pattern in compiled)
    ]


def _input_embedding_name(model: torch.nn.Module) -> str | None:
    """The input token embedding's module name, unless it is tied to the output layer (an LM head
    would then be quantized with it, by a scheme meant for a lookup table)."""
    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and output.weight is embedding.weight:
        return None
    return next(name for name, module in model.named_modules() if module is embedding)


def _is_quantized(parameter: torch.Tensor) -> bool:
    return type(parameter).__name__ not in ("Parameter", "Tensor")


def _load_quantized(task: str, folder, weights: dict, embedding: str | None, dtype: torch.dtype, device: torch.device):  # noqa: ANN001, ANN202
    """The saved float model reloaded through TorchAoConfig, each weight named with its own config.

    Weights, not modules, are named: transformers 5.25 matches a module's name against its bias too,
    and torchao's Int8Tensor then fails as a bias. The embedding is int8 with one scale per row
    (IntxWeightOnlyConfig: torchao's Int8WeightOnlyConfig handles Linear layers only)."""
    from torchao.quantization import FqnToConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis
    from transformers import TorchAoConfig

    mapping = dict(weights)
    if embedding is not None:
        mapping[f"{embedding}.weight"] = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quantization = TorchAoConfig(quant_type=FqnToConfig(mapping), include_input_output_embeddings=embedding is not None)
    return AUTO_CLASS_BY_TASK[task].from_pretrained(
        folder, quantization_config=quantization, dtype=dtype, device_map=str(device),
    ).eval()


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
    compute_dtype = _COMPUTE_DTYPE[device.type]
    skipped = skipped_linear_layers(model, config.skip)
    # The LM head stays in the model's precision, as transformers leaves it by default: its errors go
    # straight into every token's probabilities.
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weights = {
        f"{name}.weight": _torchao_config(config) for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name not in skipped and module is not output
    }
    if not weights:
        raise EngineUserError(
            f"{config.scheme} on a torch target quantizes nn.Linear layers through torchao, and this "
            f"{model.config.model_type} model has none left to quantize (GPT-2 keeps its weights in Conv1D "
            "layers, or skip matched them all); use fp16 / bf16, or target runtime onnxruntime."
        )
    embedding = _input_embedding_name(model) if config.embeddings else None
    float_dir = context.work_dir / "float"
    model.save_pretrained(float_dir, safe_serialization=True)
    state.torch_model = None
    del model
    try:
        quantized = _load_quantized(state.task, float_dir, weights, embedding, compute_dtype, device)
    finally:
        shutil.rmtree(float_dir, ignore_errors=True)
    quantized_layers = [name for name in weights if _is_quantized(quantized.get_parameter(name))]
    embeddings_quantized = embedding is not None and _is_quantized(quantized.get_parameter(f"{embedding}.weight"))
    context.details.update(
        scheme=config.scheme,
        kernels=f"torchao {type(_torchao_config(config)).__name__}"
        + (", IntxWeightOnlyConfig (int8 per row) for the embeddings" if embeddings_quantized else ""),
        compute_dtype=str(compute_dtype).removeprefix("torch."),
        layers_quantized=len(quantized_layers),
        left_layers=skipped,
        embeddings_quantized=embeddings_quantized,
    )
    if config.scheme == "int4_weight_only":
        context.details["group_size"] = config.group_size or DEFAULT_INT4_GROUP_SIZE
    context.placement["quantization"] = str(device)
    logger.info(
        "quantize %s for torch on %s: %d Linear layers through torchao, %d skipped, embeddings %s, activations in %s",
        config.scheme, device, len(quantized_layers), len(skipped),
        "int8" if embeddings_quantized else "as they were", compute_dtype,
    )
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=quantized)
