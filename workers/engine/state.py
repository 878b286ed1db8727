"""The model as it passes from one recipe step to the next, and what a step handler is given.

Torch techniques (pruning, distillation, low-rank) work on `torch_model`; a step that exports
sets `onnx_path`, after which only ONNX-level steps (e.g. entropy coding) may follow.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.registry import ModelFormat


@dataclass
class ModelState:
    task: Task
    # Holds config.json and the tokenizer files that describe the current model; a step that
    # changes the architecture (e.g. intermediate_size) writes a new folder and points here.
    config_dir: Path
    torch_model: torch.nn.Module | None = None
    onnx_path: Path | None = None

    @property
    def format(self) -> ModelFormat:
        return "onnx" if self.onnx_path is not None else "torch"

    def size_bytes(self) -> int:
        """What the current model would take on disk: the ONNX file, or the torch tensors' bytes."""
        if self.onnx_path is not None:
            return self.onnx_path.stat().st_size
        if self.torch_model is None:
            raise ValueError("The model state holds neither a torch model nor an ONNX file.")
        seen: set[int] = set()
        total = 0
        # Tied tensors (e.g. GPT-2's embeddings and LM head) are stored once.
        for tensor in [*self.torch_model.parameters(), *self.torch_model.buffers()]:
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
        return total


@dataclass
class StepContext:
    work_dir: Path  # scratch space owned by this step
    device: Literal["cpu", "cuda"]
    tokenizer: PreTrainedTokenizerBase
    sequence_length: int
    # Texts of the evaluation dataset, for techniques with requires_data (calibration, distillation).
    calibration_texts: list[str] = field(default_factory=list)
    on_progress: Callable[[float], None] = lambda fraction: None
