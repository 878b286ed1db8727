"""Measures the model after each recipe step on the first rows of the evaluation set, against the
original's outputs already stored, so every step's report entry says what that step cost in fidelity.

A step that trains for a new task (finetune) rebases the probe: the model it made, over the whole
evaluation set, becomes what later steps and the final result are compared with.

A probe is cheaper than the final evaluation (a few batches, no latency runs); the final figures
are still measured on the packaged file over the whole set.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.evaluation.fidelity import OutputStore, batch_outputs, item_fidelity, summarise_fidelity
from workers.engine.evaluation.runners import Batch, ExecutorchRunner, OnnxRunner, Runner, TorchRunner
from workers.engine.loading import model_input_names
from workers.engine.state import ModelState

# Rows measured after each step: enough for a steady mean, few enough to cost seconds.
PROBE_ROWS = 64


@dataclass(frozen=True)
class StepFidelity:
    metrics: dict[str, float]
    primary_metric: str
    num_samples: int


@dataclass(frozen=True)
class TaskReference:
    """The model right after the step that changed the task, measured on every evaluation row."""

    task: Task
    step: str  # e.g. "step 1 (finetune)"
    architecture: str
    label2id: dict[str, int]
    num_labels: int
    outputs: OutputStore
    predictions: np.ndarray | None  # class id per row, classifiers only


class StepProbe:
    def __init__(
        self, task: Task, batches: list[Batch], original: OutputStore, threads: int, reference_dir: Path | None = None
    ):
        """`reference_dir`: where a rebase stores the new reference's outputs on all of `batches`;
        without it a rebase measures the probe rows only."""
        self.task = task
        self.all_batches = batches
        self.reference_dir = reference_dir
        self.task_reference: TaskReference | None = None
        self.batches: list[Batch] = []
        self.reference: list[np.ndarray] = []
        rows = 0
        for batch, reference in zip(batches, original, strict=False):
            if rows >= PROBE_ROWS:
                break
            self.batches.append(batch)
            self.reference.append(np.array(reference))
            rows += len(batch["attention_mask"])
        self.rows = rows
        self.threads = threads

    def _runner(self, state: ModelState, tokenizer: PreTrainedTokenizerBase, device: Literal["cpu", "cuda"]) -> Runner:
        if state.pte_path is not None:
            return ExecutorchRunner(state.pte_path, model_input_names(state.torch_model, tokenizer), self.threads)
        if state.onnx_path is not None:
            # A packed model decodes bit for bit to its ONNX file (checked when it was packed).
            return OnnxRunner(state.onnx_path, device, threads=self.threads)
        model = state.torch_model
        return TorchRunner(model, self.task, model_input_names(model, tokenizer), device)

    def measure(
        self, state: ModelState, tokenizer: PreTrainedTokenizerBase, device: Literal["cpu", "cuda"]
    ) -> StepFidelity:
        runner = self._runner(state, tokenizer, device)
        outputs = [batch_outputs(self.task, runner, batch, reference)
                   for batch, reference in zip(self.batches, self.reference, strict=True)]
        summary = summarise_fidelity(self.task, item_fidelity(self.task, self.reference, outputs), self.rows)
        return StepFidelity(summary.metrics, summary.primary_metric, self.rows)

    def restore(self, reference: TaskReference) -> None:
        """Rebases onto a reference an earlier attempt measured (a resumed job's checkpoint)."""
        self.task, self.task_reference = reference.task, reference
        self.reference = [np.array(output) for output, _ in zip(reference.outputs, self.batches, strict=False)]

    def rebase(
        self, state: ModelState, tokenizer: PreTrainedTokenizerBase, device: Literal["cpu", "cuda"], step: str
    ) -> None:
        """Makes `state`, whose task differs from the probe's, the reference from now on."""
        self.task = state.task
        runner = self._runner(state, tokenizer, device)
        batches = self.all_batches if self.reference_dir is not None else self.batches
        outputs = [batch_outputs(self.task, runner, batch) for batch in batches]
        self.reference = outputs[: len(self.batches)]
        if self.reference_dir is None:
            return
        store = OutputStore(self.reference_dir)
        for output in outputs:
            store.append(output)
        config = state.torch_model.config
        self.task_reference = TaskReference(
            task=state.task, step=step, architecture=(config.architectures or [type(state.torch_model).__name__])[0],
            label2id=dict(config.label2id), num_labels=config.num_labels, outputs=store,
            predictions=np.concatenate([output.argmax(axis=-1) for output in outputs])
            if state.task == "text-classification" else None,
        )
