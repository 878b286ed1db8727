"""How closely a compressed model reproduces the original's outputs, per task.

Encoders: cosine of attention-mask mean-pooled embeddings (mean and 5th percentile).
Classifiers: top-1 agreement and mean KL(original || result) of the class distributions.
Language models: the same per token, over non-padding positions only, from the original's most likely
tokens (workers.engine.evaluation.token_distributions).
Outputs are reduced per batch first (pooled vectors, logits, a language model's top tokens) and kept on
disk, so nothing of them need fit in memory twice.
"""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.engine.architectures.tasks import Task
from workers.engine.evaluation.runners import Batch, Runner
from workers.engine.evaluation.token_distributions import agreement_and_kl, reduce_against, reduce_reference

PRIMARY_METRIC: dict[Task, str] = {
    "feature-extraction": "cosine_mean",
    "text-classification": "top1_agreement",
    "text-generation": "token_top1_agreement",
}
# Rows of logits converted to float64 at a time, to bound memory for large vocabularies.
_CHUNK_ROWS = 1024
# A language model's rows are run a few at a time, so that their logits (tokens x vocabulary float32, 64 MB
# a row of 128 tokens for Llama 3) stay near this: one row at a time there, four of a 32,000-token one.
_LM_LOGIT_BYTES = 64 * 2**20


def reduce_output(
    task: Task, output: np.ndarray, attention_mask: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """What fidelity needs from one batch: (batch, hidden) pooled, (batch, labels), or per real token the
    reference's top tokens (`reference` None: this is the reference) or this model's view of them."""
    if task == "feature-extraction":
        mask = attention_mask[..., None].astype(np.float64)
        pooled = (output.astype(np.float64) * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        return pooled.astype(np.float32)
    if task == "text-classification":
        return output.astype(np.float32)
    tokens = output[attention_mask.astype(bool)]
    return reduce_reference(tokens) if reference is None else reduce_against(tokens, reference)


def batch_outputs(task: Task, runner: Runner, batch: Batch, reference: np.ndarray | None = None) -> np.ndarray:
    """The batch's reduced outputs (reduce_output; `reference`: the reference's for the same batch). A language
    model's rows go through in groups whose logits stay near _LM_LOGIT_BYTES, sized from its vocabulary, or
    where the runner cannot tell it, from the logits of a first group of one row."""
    if task != "text-generation":
        return reduce_output(task, runner(batch), batch["attention_mask"])
    width = runner.output_width()
    group = 1 if width is None else max(1, _LM_LOGIT_BYTES // (batch["attention_mask"].shape[1] * width * 4))
    parts, start, token = [], 0, 0
    while start < len(batch["attention_mask"]):
        rows = {name: array[start : start + group] for name, array in batch.items()}
        mask = rows["attention_mask"]
        logits = runner(rows)
        tokens = int(mask.astype(bool).sum())
        rows_reference = None if reference is None else reference[token : token + tokens]
        parts.append(reduce_output(task, logits, mask, rows_reference))
        start, token = start + len(mask), token + tokens
        group = max(1, _LM_LOGIT_BYTES // max(logits.nbytes // len(mask), 1))
        del logits
    return np.concatenate(parts)


def items_per_row(task: Task, attention_mask: np.ndarray) -> np.ndarray:
    """How many reduced items each row of a batch yields: one, or its real tokens for language models."""
    if task == "text-generation":
        return attention_mask.astype(bool).sum(axis=1)
    return np.ones(len(attention_mask), dtype=np.int64)


class OutputStore:
    """Reduced outputs of one model, one .npy per batch, read back memory-mapped in order."""

    def __init__(self, directory: Path):
        self.directory = directory
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.count = 0

    def append(self, array: np.ndarray) -> None:
        np.save(self.directory / f"{self.count:06d}.npy", array)
        self.count += 1

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            yield np.load(self.directory / f"{index:06d}.npy", mmap_mode="r")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Fidelity:
    metrics: dict[str, float]
    primary_metric: str
    num_samples: int
    num_tokens: int | None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _agreement_and_kl(reference: np.ndarray, result: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    agree, kl = [], []
    for start in range(0, len(reference), _CHUNK_ROWS):
        ref = np.asarray(reference[start : start + _CHUNK_ROWS])
        res = np.asarray(result[start : start + _CHUNK_ROWS])
        log_p, log_q = log_softmax(ref), log_softmax(res)
        agree.append(ref.argmax(axis=-1) == res.argmax(axis=-1))
        kl.append((np.exp(log_p) * (log_p - log_q)).sum(axis=-1))
    return np.concatenate(agree), np.concatenate(kl)


def _cosines(reference: np.ndarray, result: np.ndarray) -> np.ndarray:
    ref, res = np.asarray(reference, np.float64), np.asarray(result, np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(res, axis=1)
    return (ref * res).sum(axis=1) / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class ItemFidelity:
    """Fidelity per item before averaging, in dataset order: one per row, or one per real token for
    language models (see items_per_row), so per-slice figures reuse them instead of rerunning models."""

    primary: np.ndarray  # cosine, or top-1 agreement as 1.0/0.0
    kl: np.ndarray | None  # classifiers and language models only


def item_fidelity(task: Task, reference: OutputStore, result: OutputStore) -> ItemFidelity:
    pairs = list(zip(reference, result, strict=True))
    if task == "feature-extraction":
        return ItemFidelity(np.concatenate([_cosines(ref, res) for ref, res in pairs]), None)
    compare = agreement_and_kl if task == "text-generation" else _agreement_and_kl
    agree_parts, kl_parts = zip(*(compare(ref, res) for ref, res in pairs), strict=True)
    return ItemFidelity(np.concatenate(agree_parts).astype(np.float64), np.concatenate(kl_parts))


def summarise_fidelity(task: Task, items: ItemFidelity, num_samples: int) -> Fidelity:
    values = items.primary
    if task == "feature-extraction":
        metrics = {"cosine_mean": float(values.mean()), "cosine_p5": float(np.percentile(values, 5))}
        return Fidelity(metrics, PRIMARY_METRIC[task], num_samples, None)
    if task == "text-classification":
        metrics = {"top1_agreement": float(values.mean()), "kl_mean": float(items.kl.mean())}
        return Fidelity(metrics, PRIMARY_METRIC[task], num_samples, None)
    metrics = {"token_top1_agreement": float(values.mean()), "token_kl_mean": float(items.kl.mean())}
    return Fidelity(metrics, PRIMARY_METRIC[task], num_samples, int(len(values)))
