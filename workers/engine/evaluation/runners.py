"""One way to run a model on tokenized batches, whether it is a torch model or an ONNX session.

Both take the same numpy inputs and return the task's output (last_hidden_state or logits) as
float32 numpy, so every measurement treats the original and the result alike.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import onnxruntime as ort
import torch
from transformers import PreTrainedTokenizerBase

from workers.engine.architectures.task_io import FORWARD_KWARGS_BY_TASK, OUTPUT_BY_TASK
from workers.engine.architectures.tasks import Task
from workers.engine.devices import synchronize
from workers.engine.evaluation.data import EvalDataset

Batch = dict[str, np.ndarray]


class Runner(Protocol):
    runtime: str
    device: str
    threads: int

    def __call__(self, batch: Batch) -> np.ndarray: ...

    def run(self, batch: Batch) -> None:
        """Runs the batch for its time and energy alone: its outputs are neither converted nor copied (a
        language model's logits at batch 32 are a vocabulary of floats per token, GBs as float32)."""

    def output_width(self) -> int | None:
        """The size of the output's last axis (a language model's vocabulary), where known before a run."""

    def synchronize(self) -> None:
        """Waits for queued device work, so a timer stops when the work is really done."""


class TorchRunner:
    runtime = "pytorch"

    def __init__(self, model: torch.nn.Module, task: Task, input_names: list[str], device: str):
        self.model = model.to(device).eval()
        self.output_name = OUTPUT_BY_TASK[task]
        self.forward_kwargs = FORWARD_KWARGS_BY_TASK[task]
        self.input_names = input_names
        self.device = device
        self.threads = torch.get_num_threads()

    def _forward(self, batch: Batch) -> torch.Tensor:
        inputs = {name: torch.from_numpy(batch[name]).to(self.device) for name in self.input_names}
        with torch.inference_mode():
            return getattr(self.model(**inputs, **self.forward_kwargs), self.output_name)

    def __call__(self, batch: Batch) -> np.ndarray:
        return self._forward(batch).float().cpu().numpy()

    def run(self, batch: Batch) -> None:
        self._forward(batch)

    def output_width(self) -> int | None:
        embeddings = self.model.get_output_embeddings() if self.output_name == "logits" else None
        return getattr(embeddings, "out_features", None)

    def synchronize(self) -> None:
        synchronize(self.device)


def cuda_provider_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, device: Literal["cpu", "cuda"], threads: int | None = None):
        options = ort.SessionOptions()
        # Same thread count as torch, so a speedup is not just more cores.
        self.threads = threads or torch.get_num_threads()
        options.intra_op_num_threads = self.threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and cuda_provider_available():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        # The device the session really uses: int8 dynamic ops may not exist on the GPU provider.
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = [item.name for item in self.session.get_inputs()]

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.session.run(None, {name: batch[name] for name in self.input_names})[0]

    def run(self, batch: Batch) -> None:
        self(batch)  # the session hands its outputs over as they are

    def output_width(self) -> int | None:
        width = self.session.get_outputs()[0].shape[-1]
        return width if isinstance(width, int) else None

    def synchronize(self) -> None:
        # session.run returns only when its outputs are on the host.
        return None


class ExecutorchRunner:
    """A .pte program run by ExecuTorch's own runtime (XNNPACK kernels), as a phone app would run it."""

    runtime = "executorch"
    device = "cpu"

    def __init__(self, path: Path, input_names: list[str], threads: int | None = None):
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        # Same thread count as torch, so a speedup is not just more cores.
        self.threads = threads or torch.get_num_threads()
        _unsafe_reset_threadpool(self.threads)
        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.input_names = input_names

    def _execute(self, batch: Batch) -> torch.Tensor:
        return self.method.execute([torch.from_numpy(batch[name]) for name in self.input_names])[0]

    def __call__(self, batch: Batch) -> np.ndarray:
        return self._execute(batch).float().numpy()

    def run(self, batch: Batch) -> None:
        self._execute(batch)

    def output_width(self) -> int | None:
        return None

    def synchronize(self) -> None:
        return None  # execute returns when the outputs are written


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    text_pairs: list[str | None] | None,
    sequence_length: int,
    pad_to_length: bool = False,
) -> Batch:
    padding = "max_length" if pad_to_length else "longest"
    if text_pairs is None or all(pair is not None for pair in text_pairs):
        encoded = tokenizer(
            texts, text_pairs, padding=padding, truncation=True, max_length=sequence_length, return_tensors="np"
        )
    else:
        # Some rows have a pair and some do not: a batched call cannot mix them, so encode each
        # row and pad them together.
        rows = [
            tokenizer(text, pair, truncation=True, max_length=sequence_length)
            for text, pair in zip(texts, text_pairs, strict=True)
        ]
        encoded = tokenizer.pad(rows, padding=padding, max_length=sequence_length, return_tensors="np")
    return {name: np.asarray(values, dtype=np.int64) for name, values in encoded.items()}


def iter_batches(
    tokenizer: PreTrainedTokenizerBase, dataset: EvalDataset, batch_size: int, sequence_length: int
) -> Iterator[Batch]:
    """Dataset order, each batch padded to its own longest row (as a real caller would)."""
    for start in range(0, len(dataset), batch_size):
        stop = start + batch_size
        pairs = dataset.text_pairs[start:stop] if dataset.text_pairs is not None else None
        yield tokenize(tokenizer, dataset.texts[start:stop], pairs, sequence_length)
