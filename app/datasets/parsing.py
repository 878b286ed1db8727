"""Validation of an uploaded evaluation dataset (.jsonl or .csv), read as a stream, line by line.

Every refusal names the line and says what to change.
"""

import csv
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import Invalid

ALLOWED_COLUMNS = ("text", "text_pair", "label", "slice")
REQUIRED_COLUMN = "text"
_ALLOWED_TEXT = ", ".join(ALLOWED_COLUMNS)
_BOM = "\ufeff"


@dataclass(frozen=True)
class DatasetInfo:
    num_rows: int
    columns: list[str]  # in ALLOWED_COLUMNS order, whatever order the file used


def inspect_dataset(path: Path) -> DatasetInfo:
    """Check every row of the dataset at `path` and count them; Invalid says which line is wrong and why."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        num_rows, seen = _inspect_jsonl(path)
    elif suffix == ".csv":
        num_rows, seen = _inspect_csv(path)
    else:
        raise Invalid(f"A dataset must be a .jsonl or .csv file, not '{path.name}'.")
    if num_rows == 0:
        raise Invalid("The dataset has no rows; add at least one row with a non-empty 'text'.")
    return DatasetInfo(num_rows=num_rows, columns=[c for c in ALLOWED_COLUMNS if c in seen])


def _inspect_jsonl(path: Path) -> tuple[int, set[str]]:
    num_rows, seen = 0, set()
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Invalid(f"Line {line_no} is not valid JSON ({exc.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise Invalid(f'Line {line_no} is not a JSON object; write each row as {{"text": "..."}}.')
        _check_columns(row.keys(), f"Line {line_no}")
        _check_values(row, line_no)
        seen.update(row)
        num_rows += 1
    return num_rows, seen


def _inspect_csv(path: Path) -> tuple[int, set[str]]:
    # strict: an unclosed quote is an error instead of silently swallowing the rest of the file.
    reader = csv.reader((line for _, line in _text_lines(path)), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return 0, set()
        columns = [name.strip() for name in header]
        _check_columns(columns, f"The CSV header (line {reader.line_num})")
        if len(set(columns)) != len(columns):
            raise Invalid(f"The CSV header on line {reader.line_num} names a column twice; name each column once.")
        num_rows = 0
        for values in reader:
            if not values:
                continue
            if len(values) != len(columns):
                raise Invalid(
                    f"Line {reader.line_num} has {len(values)} values but the header has {len(columns)} columns; "
                    "quote values that contain commas."
                )
            _check_values(dict(zip(columns, values)), reader.line_num)
            num_rows += 1
    except csv.Error as exc:
        raise Invalid(f"Line {reader.line_num} is not valid CSV ({exc}).") from None
    return num_rows, set(columns)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines decoded as UTF-8 (an opening BOM dropped), numbered from 1, read one at a time."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid(f"Line {line_no} is not valid UTF-8; save the file with UTF-8 encoding.") from None
            if line_no == 1:
                line = line.removeprefix(_BOM)
            yield line_no, line


def _check_columns(columns: Collection[str], where: str) -> None:
    unknown = [c for c in columns if c not in ALLOWED_COLUMNS]
    if unknown:
        raise Invalid(
            f"{where} has the unknown column '{unknown[0]}'; the allowed columns are: {_ALLOWED_TEXT}."
        )
    if REQUIRED_COLUMN not in columns:
        raise Invalid(f"{where} has no '{REQUIRED_COLUMN}' column; every row needs a non-empty 'text'.")


def _check_values(row: dict, line_no: int) -> None:
    text = row[REQUIRED_COLUMN]
    if not isinstance(text, str):
        raise Invalid(f"Line {line_no}: 'text' must be a string, not {_json_type(text)}.")
    if not text.strip():
        raise Invalid(f"Line {line_no}: 'text' is empty; every row needs some text.")
    # The optional columns feed tokenizers and metrics as strings (label may be a class number).
    for column in ("text_pair", "slice"):
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            raise Invalid(f"Line {line_no}: '{column}' must be a string or null, not {_json_type(value)}.")
    label = row.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, str | int | float)):
        raise Invalid(f"Line {line_no}: 'label' must be a string, a number or null, not {_json_type(label)}.")


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
