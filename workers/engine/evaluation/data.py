"""Loads the texts a job is evaluated on: an uploaded .jsonl/.csv, or the built-in sample.

The built-in sample (`data/builtin_sample.txt`, described in `data/README.md`) holds 320 original
English lines, one per line, across everyday, technical, news, reviews, science, finance, health,
law and other registers, short to long, plus ~10 lines in French, German or Spanish. It has no
labels, so it measures fidelity and latency but not accuracy.

Uploaded files have a `text` column and optionally `text_pair`, `label` and `slice`, on any subset
of rows, as `dataset_format` defines; the upload check uses the same rules, so an accepted file
is also readable here.
"""

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from workers.engine.evaluation.dataset_format import DatasetError, iter_rows

BUILTIN_SAMPLE_PATH = Path(__file__).parent / "data" / "builtin_sample.txt"


@dataclass(frozen=True)
class EvalDataset:
    # Optional columns are None when no row has them; otherwise one entry per row, None where a
    # row leaves it out (upload validation allows that, so a job must too).
    texts: list[str]
    text_pairs: list[str | None] | None
    labels: list[str | int | None] | None
    slices: list[str | None] | None
    source: Literal["builtin", "uploaded"]

    def __len__(self) -> int:
        return len(self.texts)


def _column(values: list) -> list | None:
    return values if any(value is not None for value in values) else None


def builtin_sample_rows() -> int:
    """How many texts the builtin sample holds (a job with no dataset uses them)."""
    return sum(1 for line in BUILTIN_SAMPLE_PATH.read_text(encoding="utf-8").splitlines() if line.strip())


def load_eval_dataset(path: Path | None, max_samples: int) -> EvalDataset:
    """The first `max_samples` rows (file order, so a job is reproducible)."""
    if path is None:
        lines = [line.strip() for line in BUILTIN_SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line][:max_samples]
        return EvalDataset(texts=texts, text_pairs=None, labels=None, slices=None, source="builtin")
    rows = [row for _line_no, row in islice(iter_rows(path), max_samples)]
    if not rows:
        raise DatasetError("The dataset file has no rows.")
    return EvalDataset(
        texts=[row["text"] for row in rows],
        text_pairs=_column([row["text_pair"] for row in rows]),
        labels=_column([row["label"] for row in rows]),
        slices=_column([row["slice"] for row in rows]),
        source="uploaded",
    )
