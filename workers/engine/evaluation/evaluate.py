"""Runs one model over the prepared evaluation inputs: stores its reduced outputs for fidelity,
measures its latency, and scores it against labels when the task and the dataset allow.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.tasks import Task
from workers.engine.evaluation.data import EvalDataset
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.evaluation.fidelity import OutputStore, batch_outputs
from workers.engine.evaluation.latency import latency_batch, measure_latency
from workers.engine.evaluation.quality import UNLABELLED, classification_quality
from workers.engine.evaluation.runners import Batch, Runner, iter_batches
from workers.engine.report import LatencyReport, QualityReport


@dataclass(frozen=True)
class PreparedInputs:
    """Tokenized once and fed unchanged to the original and to the result."""

    batches: list[Batch]
    latency: dict[int, Batch]
    labels: np.ndarray | None  # class ids (UNLABELLED where a row has none); classifiers only
    num_samples: int


def prepare_inputs(
    tokenizer: PreTrainedTokenizerBase, dataset: EvalDataset, settings: EvalSettings, labels: np.ndarray | None
) -> PreparedInputs:
    return PreparedInputs(
        batches=list(iter_batches(tokenizer, dataset, settings.batch_size, settings.sequence_length)),
        latency={
            size: latency_batch(tokenizer, dataset, size, settings.sequence_length)
            for size in sorted(set(settings.latency_batch_sizes))
        },
        labels=labels,
        num_samples=len(dataset),
    )


@dataclass
class ModelEvaluation:
    outputs: OutputStore
    latency: LatencyReport
    quality: QualityReport | None
    predictions: np.ndarray | None = None  # class id per row, classifiers only (for per-slice accuracy)


def evaluate_model(
    runner: Runner,
    task: Task,
    inputs: PreparedInputs,
    settings: EvalSettings,
    store_dir: Path,
    on_progress: Callable[[str, float], None],
    reference: OutputStore | None = None,
) -> ModelEvaluation:
    """`on_progress` gets ("outputs" | "latency", fraction of that phase). `reference`: the outputs this model
    will be compared with, on the same inputs (a language model's are reduced against them)."""
    store = OutputStore(store_dir)
    predictions = []
    references = iter(reference) if reference is not None and task == "text-generation" else None
    for index, batch in enumerate(inputs.batches, start=1):
        reduced = batch_outputs(task, runner, batch, None if references is None else next(references))
        store.append(reduced)
        if task == "text-classification":
            predictions.append(reduced.argmax(axis=-1))
        on_progress("outputs", index / len(inputs.batches))

    stats = {}
    for index, (size, batch) in enumerate(inputs.latency.items(), start=1):
        stats[f"batch_{size}"] = measure_latency(runner, batch, settings.latency_warmup, settings.latency_repeats)
        on_progress("latency", index / len(inputs.latency))
    latency = LatencyReport(
        sequence_length=settings.sequence_length,
        device=runner.device,
        runtime=runner.runtime,
        threads=runner.threads,
        warmup_runs=settings.latency_warmup,
        **stats,
    )

    row_predictions = np.concatenate(predictions) if predictions else None
    quality = quality_report(inputs.labels, row_predictions) if task == "text-classification" else None
    return ModelEvaluation(outputs=store, latency=latency, quality=quality, predictions=row_predictions)


def quality_report(labels: np.ndarray | None, predictions: np.ndarray | None) -> QualityReport | None:
    """Accuracy and macro-F1 over the labelled rows; None without labels."""
    if labels is None or predictions is None:
        return None
    labelled = labels != UNLABELLED
    scores = classification_quality(labels[labelled], predictions[labelled])
    return QualityReport(**scores, num_labelled=int(labelled.sum()))
