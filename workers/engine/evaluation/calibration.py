"""Calibration data for steps that measure or calibrate on the dataset: tokenised batches, an
onnxruntime CalibrationDataReader over them, and the fidelity of an ONNX file against torch outputs."""

from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.devices import module_device
from workers.engine.evaluation.fidelity import OutputStore, batch_outputs, item_fidelity, summarise_fidelity
from workers.engine.evaluation.runners import Batch, OnnxRunner, TorchRunner, tokenize

# Enough sentences to rank layers and calibrate ranges; more mostly adds time on a 2-core worker.
DEFAULT_MAX_TEXTS = 128
BATCH_SIZE = 16


def calibration_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    sequence_length: int,
    input_names: list[str],
    max_texts: int = DEFAULT_MAX_TEXTS,
) -> list[Batch]:
    """Padded to the longest row of each batch, as the evaluation does, so ranges match real calls."""
    texts = texts[:max_texts]
    batches = []
    for start in range(0, len(texts), BATCH_SIZE):
        batch = tokenize(tokenizer, texts[start : start + BATCH_SIZE], None, sequence_length)
        batches.append({name: batch[name] for name in input_names})
    return batches


class BatchReader(CalibrationDataReader):
    """Feeds prepared batches to onnxruntime's calibrators (quantize_static); rewindable, and it takes
    set_range so that quantize_static's CalibStridedMinMax option can calibrate a few batches at a time."""

    def __init__(self, batches: list[Batch]):
        self.batches = batches
        self.position = 0
        self.end = len(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0
        self.end = len(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position = start_index
        self.end = min(end_index, len(self.batches))


class FidelityProbe:
    """The task's primary fidelity metric (cosine_mean, top1_agreement, ...) of ONNX files against the
    torch model's outputs, on the same calibration batches."""

    def __init__(
        self, model: torch.nn.Module, task: Task, batches: list[Batch], work_dir: Path, onnx_device: str = "cpu"
    ):
        """The reference runs where the model is; the candidates on onnxruntime on `onnx_device`, where
        the result will run."""
        self.task = task
        self.batches = batches
        self.work_dir = work_dir
        self.onnx_device = onnx_device
        self.reference = OutputStore(work_dir / "reference")
        runner = TorchRunner(model, task, list(batches[0]), str(module_device(model)))
        for batch in batches:
            self.reference.append(batch_outputs(task, runner, batch))
        self.num_samples = sum(len(batch["attention_mask"]) for batch in batches)

    def __call__(self, onnx_path: Path) -> float:
        runner = OnnxRunner(onnx_path, self.onnx_device)
        result = OutputStore(self.work_dir / "candidate")
        for batch, reference in zip(self.batches, self.reference, strict=True):
            result.append(batch_outputs(self.task, runner, batch, reference))
        summary = summarise_fidelity(self.task, item_fidelity(self.task, self.reference, result), self.num_samples)
        result.remove()
        return summary.metrics[summary.primary_metric]

    def remove(self) -> None:
        self.reference.remove()
