"""Validation of an uploaded evaluation dataset against the engine's dataset format, as a stream."""

from dataclasses import dataclass
from pathlib import Path

from app.core.errors import Invalid
from workers.engine.evaluation.dataset_format import ALLOWED_COLUMNS, DatasetError, iter_rows


@dataclass(frozen=True)
class DatasetInfo:
    num_rows: int
    num_labelled: int
    columns: list[str]  # in ALLOWED_COLUMNS order, whatever order the file used


def inspect_dataset(path: Path) -> DatasetInfo:
    """Checks every row of the dataset at `path` and counts them; Invalid says which line is wrong and why."""
    num_rows, num_labelled, seen = 0, 0, set()
    try:
        for _line_no, row in iter_rows(path):
            num_rows += 1
            num_labelled += row.get("label") is not None
            seen.update(column for column, value in row.items() if value is not None)
    except DatasetError as exc:
        raise Invalid(str(exc)) from None
    if num_rows == 0:
        raise Invalid("The dataset has no rows; add at least one row with a non-empty 'text'.")
    return DatasetInfo(num_rows=num_rows, num_labelled=num_labelled, columns=[c for c in ALLOWED_COLUMNS if c in seen])
