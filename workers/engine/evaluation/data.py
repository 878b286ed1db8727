"""Loads the texts a job is evaluated on: an uploaded .jsonl/.csv, or the built-in sample.

The built-in sample (`data/builtin_sample.txt`, described in `data/README.md`) holds 320 original
English lines, one per line, across everyday, technical, news, reviews, science, finance, health,
law and other registers, short to long, plus ~10 lines in French, German or Spanish. It has no
labels, so it measures fidelity and latency but not accuracy.

Uploaded files have a `text` column and optionally `text_pair`, `label` and `slice`, on any subset
of rows; a .jsonl file holds one JSON object per line, a .csv file has a header row. The rules
match the upload check (app/datasets/parsing.py), so an accepted file is also readable here.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workers.engine.errors import EngineUserError

BUILTIN_SAMPLE_PATH = Path(__file__).parent / "data" / "builtin_sample.txt"


class DatasetError(EngineUserError):
    """The dataset file cannot be used as it is; the message names the row and the problem."""


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


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    # utf-8-sig: an opening byte-order mark, which some editors write, is not part of the data.
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"Line {number} is not valid JSON: {exc.msg}.") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"Line {number} must be a JSON object with a 'text' field.")
            rows.append((number, row))
    return rows


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = [name.strip() for name in next(reader, [])]
            if "text" not in header:
                raise DatasetError(f"The CSV header must have a 'text' column; it has {header}.")
            return [(reader.line_num, dict(zip(header, values))) for values in reader if values]
        except csv.Error as exc:
            raise DatasetError(f"Line {reader.line_num} is not valid CSV ({exc}).") from exc


def _optional(value: object) -> object:
    # An empty CSV cell and a JSON null both mean "not given".
    return None if value in ("", None) else value


def _label(value: object, number: int) -> str | int | None:
    value = _optional(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 in JSON is the class id 1
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
        raise DatasetError(f"Line {number}: 'label' must be a string or an integer, not {value!r}.")
    return value


def _column(values: list) -> list | None:
    return values if any(value is not None for value in values) else None


def _from_rows(rows: list[tuple[int, dict]]) -> EvalDataset:
    texts, pairs, labels, slices = [], [], [], []
    for number, row in rows:
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"Line {number} needs a non-empty string 'text'.")
        pair = _optional(row.get("text_pair"))
        if pair is not None and not isinstance(pair, str):
            raise DatasetError(f"Line {number}: 'text_pair' must be a string.")
        texts.append(text)
        pairs.append(pair)
        labels.append(_label(row.get("label"), number))
        slice_name = _optional(row.get("slice"))
        slices.append(None if slice_name is None else str(slice_name))
    return EvalDataset(
        texts=texts, text_pairs=_column(pairs), labels=_column(labels), slices=_column(slices), source="uploaded"
    )


def load_eval_dataset(path: Path | None, max_samples: int) -> EvalDataset:
    """The first `max_samples` rows (file order, so a job is reproducible)."""
    if path is None:
        lines = [line.strip() for line in BUILTIN_SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line][:max_samples]
        return EvalDataset(texts=texts, text_pairs=None, labels=None, slices=None, source="builtin")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(path)
        elif suffix == ".csv":
            rows = _read_csv(path)
        else:
            raise DatasetError(f"Dataset files must be .jsonl or .csv, not {path.name!r}.")
    except UnicodeDecodeError as exc:
        raise DatasetError("The dataset file is not UTF-8 text.") from exc
    if not rows:
        raise DatasetError("The dataset file has no rows.")
    return _from_rows(rows[:max_samples])
