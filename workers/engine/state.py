"""The model as it passes from one recipe step to the next, and what a step handler is given.

Torch techniques (pruning, distillation, low-rank) work on `torch_model`; a step that exports
sets `onnx_path`, after which only ONNX-level steps (e.g. entropy coding) may follow; entropy coding
sets `packed_path` (the .cpz container, whose model decodes bit for bit to `onnx_path`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import onnx
import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.energy.schema import StageEnergy
from workers.engine.errors import EngineUserError
from workers.engine.export.onnx import count_onnx_parameters
from workers.engine.federated.config import FederationSettings
from workers.engine.registry import ModelFormat
from workers.engine.reuse import ReuseCache
from workers.engine.target import Target

if TYPE_CHECKING:  # within_step imports the checkpoint store, which imports this module
    from workers.engine.checkpoints.within_step import WithinStep


@dataclass
class ModelState:
    task: Task
    # Holds config.json and the tokenizer files that describe the current model; a step that
    # changes the architecture (e.g. intermediate_size) writes a new folder and points here.
    config_dir: Path
    torch_model: torch.nn.Module | None = None
    onnx_path: Path | None = None
    packed_path: Path | None = None
    # An ExecuTorch program built from torch_model (which stays: it holds the parameter count).
    pte_path: Path | None = None
    # A causal LM's compressed-tensors folder (llm_quantize); torch_model is that folder reloaded.
    compressed_dir: Path | None = None

    @property
    def format(self) -> ModelFormat:
        if self.packed_path is not None:
            return "packed"
        if self.pte_path is not None:
            return "executorch"
        if self.compressed_dir is not None:
            return "compressed-tensors"
        return "onnx" if self.onnx_path is not None else "torch"

    def size_bytes(self) -> int:
        """What the current model would take on disk: the .cpz or ONNX file, or the torch tensors' bytes."""
        if self.packed_path is not None:
            return self.packed_path.stat().st_size
        if self.pte_path is not None:
            return self.pte_path.stat().st_size
        if self.compressed_dir is not None:
            return sum(path.stat().st_size for path in self.compressed_dir.glob("*.safetensors"))
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

    def num_parameters(self) -> int:
        """Weight elements: unique torch tensors, or the ONNX file's weight initializers."""
        if self.onnx_path is not None:
            return count_onnx_parameters(onnx.load(str(self.onnx_path)))
        seen: set[int] = set()
        total = 0
        for tensor in self.torch_model.parameters():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel()
        return total


@dataclass
class StepContext:
    work_dir: Path  # scratch space owned by this step
    device: Literal["cpu", "cuda"]
    tokenizer: PreTrainedTokenizerBase
    sequence_length: int
    # Where the result will run: a step that builds the runtime's file (quantize) builds it for this.
    target: Target = field(default_factory=Target)
    # The largest batch the result will be run with (an ExecuTorch program is bounded at export).
    max_batch: int = 64
    # Texts of the job's dataset (or the builtin sample), for calibration, importance and training.
    calibration_texts: list[str] = field(default_factory=list)
    # For classifiers with a labelled dataset: one class id per calibration text, UNLABELLED (-1)
    # where a row has none (workers.engine.evaluation.quality); None otherwise.
    calibration_labels: list[int] | None = None
    # The same rows' labels as the dataset names them (None where a row has none); None when the
    # dataset has no label column. A step that trains for a new task (finetune) reads these.
    calibration_label_names: list[str | None] | None = None
    on_progress: Callable[[float], None] = lambda fraction: None
    # Other uploaded model folders a step may name by id (e.g. distill's student_model_id); the
    # worker resolves them, so the engine never sees the database.
    model_paths: dict[str, Path] = field(default_factory=dict)
    # The step's own figures for its report entry (e.g. bits per weight, nonzero parameters,
    # examples used); JSON-serialisable values only.
    details: dict[str, Any] = field(default_factory=dict)
    # The interpreter that has llm-compressor (llm_quantize); None: .venv-llm beside the running venv.
    llm_python: Path | None = None
    # Set only for a goal search's candidate's first step, whose model is the untouched original: the
    # export and calibration statistics every candidate would compute again (workers.engine.reuse).
    reuse: ReuseCache | None = None
    # Set only where the step's model is the upload as it was loaded (the first step of a run or of a goal's
    # candidate): the upload's folder, which a step may read instead of writing the model out again.
    upload_dir: Path | None = None
    # Where each part of the step ran (e.g. {"training": "cuda", "kmeans": "cpu"}), so a cuda job's
    # report says what it left on the CPU.
    placement: dict[str, str] = field(default_factory=dict)
    # The worker's federated settings (federated steps), and how a step tells the worker something mid-step
    # (the federated step's address, so that the worker starts the sites' clients).
    federation: FederationSettings | None = None
    announce: Callable[[dict], None] = lambda event: None
    # Energy the step's work used on other machines (a federated step's sites), each on its own grid: booked
    # in the job's energy as stages of their own, after the step's.
    site_energy: list[StageEnergy] = field(default_factory=list)
    # A step that can stop part-way and go on (llm_quantize) saves its progress and resumes through this;
    # None where the run keeps no checkpoints (workers.engine.checkpoints.within_step).
    within_step: "WithinStep | None" = None

    def uploaded_model(self, param: str, model_id: str, role: str) -> Path:
        """The folder of the uploaded model a step's `param` names; EngineUserError when this job has none."""
        folder = self.model_paths.get(model_id)
        if folder is None:
            known = ", ".join(sorted(self.model_paths)) or "none"
            raise EngineUserError(
                f"{param} {model_id!r} names no uploaded model available to this job (available: {known}); upload "
                f"the {role} first and use its id."
            )
        return folder
