"""Loads a validated Hugging Face folder: the model (safetensors only, never remote code) and its tokenizer."""

import inspect
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from workers.engine.architectures.task_io import AUTO_CLASS_BY_TASK, MODEL_INPUT_NAMES
from workers.engine.architectures.tasks import Task
from workers.engine.config_folder import PRUNED_SHAPES_FILE
from workers.engine.errors import EngineUserError
from workers.engine.pruned_model import load_pruned_model


def load_model(folder: Path, task: Task, device: str = "cpu", stored_dtype: bool = False) -> torch.nn.Module:
    """In float32 whatever the stored dtype: the steps that train need it, and half precision is slow or
    unsupported on some CPUs. `stored_dtype`: in the dtype config.json records instead (a causal LM whose
    steps all take it, see TechniqueConfig.takes_stored_dtype): half the memory, and the original then
    computes in the precision its compressed form and its users' runtimes compute in."""
    if (folder / PRUNED_SHAPES_FILE).is_file():
        # Layers of different widths (pruned heads or neurons): config.json alone cannot rebuild them.
        return load_pruned_model(folder, task).to(device).eval()
    model = AUTO_CLASS_BY_TASK[task].from_pretrained(
        folder, use_safetensors=True, trust_remote_code=False, dtype="auto" if stored_dtype else torch.float32
    )
    return model.to(device).eval()


def load_shipped_model(folder: Path, task: Task, device: str) -> torch.nn.Module:
    """A torch target's package, loaded exactly as its user would: plain from_pretrained, in the dtype
    and quantization its config.json records, straight onto the device."""
    model = AUTO_CLASS_BY_TASK[task].from_pretrained(
        folder, use_safetensors=True, trust_remote_code=False, dtype="auto", device_map=device
    )
    return model.eval()


def load_config(folder: Path) -> PretrainedConfig:
    return AutoConfig.from_pretrained(folder, trust_remote_code=False)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise EngineUserError(
            f"The model folder has no usable tokenizer ({exc}). Include the tokenizer files saved by "
            "tokenizer.save_pretrained(folder), e.g. tokenizer.json and tokenizer_config.json."
        ) from exc
    if tokenizer.pad_token is None:
        # GPT-2-like tokenizers have no pad token; batches still need one, and the attention mask
        # keeps the padded positions out of every measurement.
        if tokenizer.eos_token is None:
            raise EngineUserError("The tokenizer has neither a pad token nor an eos token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding keeps real tokens at positions 0..n-1, so causal LMs see the same positions
    # whether or not a sequence is padded.
    tokenizer.padding_side = "right"
    return tokenizer


def model_input_names(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokenizer outputs this model's forward accepts, in a fixed order."""
    accepted = inspect.signature(model.forward).parameters
    produced = set(tokenizer.model_input_names)
    return [name for name in MODEL_INPUT_NAMES if name in accepted and name in produced]


def max_positions(config: PretrainedConfig) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
