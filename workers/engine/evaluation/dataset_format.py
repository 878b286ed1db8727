"""The evaluation dataset format, in one place for the upload check and the engine.

A `.jsonl` file holds one JSON object per line; a `.csv` file has a header row. Column `text` is
required; `text_pair`, `label` and `slice` are optional, on any subset of rows. Files are read as
a stream, line by line, and every refusal names the line and says what to change.
"""

import csv
import itertools
import json
from collections.abc import Collection, Iterator
from pathlib import Path

from workers.engine.errors import EngineUserError

ALLOWED_COLUMNS = ("text", "text_pair", "label", "slice")
REQUIRED_COLUMN = "text"
DATASET_SUFFIXES = (".jsonl", ".csv")
_ALLOWED_TEXT = ", ".join(ALLOWED_COLUMNS)
_BOM = "\ufeff"
# A row is one text to evaluate; a longer line is a mistake (or an attack on the reader's memory),
# refused before it is read whole.
MAX_LINE_BYTES = 1 << 20


class DatasetError(EngineUserError):
    """The dataset file cannot be used as it is; the message names the line and the problem."""


Row = dict[str, str | int | None]


def iter_rows(path: Path) -> Iterator[tuple[int, Row]]:
    """Yields (line number, row) for every row, checked and normalised: absent, null and empty
    optional values are None, and an integral float label (1.0) is the class id 1."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    else:
        raise DatasetError(f"A dataset must be a .jsonl or .csv file, not '{path.name}'.")
    for line_no, row in rows:
        yield line_no, _normalise(row, line_no)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"Line {line_no} is not valid JSON ({exc.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise DatasetError(f'Line {line_no} is not a JSON object; write each row as {{"text": "..."}}.')
        _check_columns(row.keys(), f"Line {line_no}")
        yield line_no, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    # strict: an unclosed quote is an error instead of silently swallowing the rest of the file.
    reader = csv.reader((line for _, line in _text_lines(path)), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        _check_columns(columns, f"The CSV header (line {reader.line_num})")
        if len(set(columns)) != len(columns):
            raise DatasetError(f"The CSV header on line {reader.line_num} names a column twice; name each column once.")
        for values in reader:
            if not values:
                continue
            if len(values) != len(columns):
                raise DatasetError(
                    f"Line {reader.line_num} has {len(values)} values but the header has {len(columns)} columns; "
                    "quote values that contain commas."
                )
            yield reader.line_num, dict(zip(columns, values, strict=True))
    except csv.Error as exc:
        raise DatasetError(f"Line {reader.line_num} is not valid CSV ({exc}).") from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines decoded as UTF-8 (an opening BOM dropped), numbered from 1, read one at a time."""
    with path.open("rb") as handle:
        for line_no in itertools.count(1):
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise DatasetError(
                    f"Line {line_no} is longer than {MAX_LINE_BYTES // 1024} KiB; put one text of reasonable "
                    "length on each line (split long documents into several rows)."
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"Line {line_no} is not valid UTF-8; save the file with UTF-8 encoding.") from None
            if line_no == 1:
                line = line.removeprefix(_BOM)
            yield line_no, line


def _check_columns(columns: Collection[str], where: str) -> None:
    unknown = [c for c in columns if c not in ALLOWED_COLUMNS]
    if unknown:
        raise DatasetError(f"{where} has the unknown column '{unknown[0]}'; the allowed columns are: {_ALLOWED_TEXT}.")
    if REQUIRED_COLUMN not in columns:
        raise DatasetError(f"{where} has no '{REQUIRED_COLUMN}' column; every row needs a non-empty 'text'.")


def _optional(value: object) -> object:
    # An empty CSV cell and a JSON null both mean "not given".
    return None if value in ("", None) else value


def _normalise(row: dict, line_no: int) -> Row:
    text = row[REQUIRED_COLUMN]
    if not isinstance(text, str):
        raise DatasetError(f"Line {line_no}: 'text' must be a string, not {_json_type(text)}.")
    if not text.strip():
        raise DatasetError(f"Line {line_no}: 'text' is empty; every row needs some text.")
    normalised: Row = {"text": text}
    for column in ("text_pair", "slice"):
        value = _optional(row.get(column))
        if value is not None and not isinstance(value, str):
            raise DatasetError(f"Line {line_no}: '{column}' must be a string or null, not {_json_type(value)}.")
        normalised[column] = value
    label = _optional(row.get("label"))
    if isinstance(label, float) and label.is_integer():
        label = int(label)  # 1.0 in JSON is the class id 1
    if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
        raise DatasetError(
            f"Line {line_no}: 'label' must be a class name, a whole class number or null, not {label!r}."
        )
    normalised["label"] = label
    return normalised


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
