"""Latency of a runner at fixed shapes: p50 and p95 over timed repeats, after warmup runs.

Inputs are padded to the full sequence length, so the figure does not depend on the sample's
sentence lengths and the original and the result see identical work.
"""

import time

import numpy as np
from transformers import PreTrainedTokenizerBase

from workers.engine.evaluation.data import EvalDataset
from workers.engine.evaluation.runners import Batch, Runner, tokenize


def latency_batch(
    tokenizer: PreTrainedTokenizerBase, dataset: EvalDataset, batch_size: int, sequence_length: int
) -> Batch:
    """The first `batch_size` texts (repeated if the dataset is smaller), padded to sequence_length."""
    indices = [index % len(dataset) for index in range(batch_size)]
    pairs = [dataset.text_pairs[index] for index in indices] if dataset.text_pairs is not None else None
    return tokenize(tokenizer, [dataset.texts[index] for index in indices], pairs, sequence_length, pad_to_length=True)


def measure_latency(runner: Runner, batch: Batch, warmup: int, repeats: int) -> dict[str, float | int]:
    for _ in range(warmup):
        runner.run(batch)
    runner.synchronize()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(batch)
        runner.synchronize()
        timings.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p95_ms": float(np.percentile(timings, 95)),
        "runs": repeats,
    }
