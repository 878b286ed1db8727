"""inspect_dataset: accepted .jsonl/.csv files, and a precise message for each kind of mistake."""

import json
from pathlib import Path

import pytest

from app.core.errors import Invalid
from app.datasets.parsing import inspect_dataset


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def refusal(path: Path) -> str:
    with pytest.raises(Invalid) as err:
        inspect_dataset(path)
    return err.value.detail


# --- jsonl ----------------------------------------------------------------------------------------


def test_jsonl_happy_path(tmp_path: Path) -> None:
    content = (
        jsonl({"text": "a great movie", "label": 1, "slice": "short"})
        + "\n   \n"
        + jsonl({"label": "neg", "text": "dull", "text_pair": "a remark"}, {"text": "ok", "label": None})
    )
    info = inspect_dataset(write(tmp_path, "d.jsonl", content))
    assert info.num_rows == 3
    assert info.columns == ["text", "text_pair", "label", "slice"]


def test_jsonl_with_bom_and_no_trailing_newline(tmp_path: Path) -> None:
    info = inspect_dataset(write(tmp_path, "d.jsonl", "\ufeff" + '{"text": "x"}\n{"text": "y"}'))
    assert info.num_rows == 2
    assert info.columns == ["text"]


def test_jsonl_bad_json_names_the_line(tmp_path: Path) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a"}) + '{"text": "b",}\n'))
    assert "Line 2" in detail and "not valid JSON" in detail


def test_jsonl_row_that_is_not_an_object(tmp_path: Path) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a"}, ["text", "b"])))
    assert "Line 2" in detail and "not a JSON object" in detail


def test_jsonl_missing_text(tmp_path: Path) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a"}, {"label": 1})))
    assert "Line 2" in detail and "no 'text' column" in detail


def test_jsonl_unknown_column_lists_allowed(tmp_path: Path) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a", "sentence": "b"})))
    assert "Line 1" in detail and "'sentence'" in detail
    assert "text, text_pair, label, slice" in detail


@pytest.mark.parametrize(("value", "what"), [(5, "a number"), (None, "null"), (["a"], "an array"), (True, "a boolean")])
def test_jsonl_non_string_text(tmp_path: Path, value: object, what: str) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a"}, {"text": "b"}, {"text": value})))
    assert "Line 3" in detail and "must be a string" in detail and what in detail


@pytest.mark.parametrize("value", ["", "   \t"])
def test_jsonl_empty_text(tmp_path: Path, value: str) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": value})))
    assert "Line 1" in detail and "'text' is empty" in detail


def test_jsonl_optional_column_of_wrong_type(tmp_path: Path) -> None:
    detail = refusal(write(tmp_path, "d.jsonl", jsonl({"text": "a", "label": {"x": 1}})))
    assert "Line 1" in detail and "'label'" in detail
    detail = refusal(write(tmp_path, "e.jsonl", jsonl({"text": "a", "text_pair": 3})))
    assert "'text_pair'" in detail


def test_jsonl_zero_rows(tmp_path: Path) -> None:
    assert "no rows" in refusal(write(tmp_path, "d.jsonl", "\n\n  \n"))
    assert "no rows" in refusal(write(tmp_path, "e.jsonl", ""))


def test_jsonl_not_utf8_names_the_line(tmp_path: Path) -> None:
    content = jsonl({"text": "a"}).encode() + '{"text": "café"}\n'.encode("latin-1")
    detail = refusal(write(tmp_path, "d.jsonl", content))
    assert "Line 2" in detail and "UTF-8" in detail


# --- csv ------------------------------------------------------------------------------------------


def test_csv_happy_path_with_bom_quotes_and_blank_lines(tmp_path: Path) -> None:
    content = '\ufefflabel,text\r\npos,"a great, long\nmovie"\r\n\r\nneg,dull\r\n'
    info = inspect_dataset(write(tmp_path, "d.csv", content))
    assert info.num_rows == 2
    assert info.columns == ["text", "label"]


ALLOWED = "text, text_pair, label, slice"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"label,slice\n1,a\n", ["header (line 1)", "no 'text' column"], id="missing-text"),
        pytest.param(b"text,score\na,1\n", ["header (line 1)", "'score'", ALLOWED], id="unknown-column"),
        pytest.param(b"text,text\na,b\n", ["twice"], id="duplicate-column"),
        pytest.param(b"text,label\na,1\n ,2\n", ["Line 3", "'text' is empty"], id="empty-text"),
        pytest.param(b"text,label\na,1\nb,2,3\n", ["Line 3", "3 values", "2 columns"], id="extra-value"),
        pytest.param(b"text,label\n", ["no rows"], id="header-only"),
        pytest.param(b"", ["no rows"], id="empty-file"),
        pytest.param(b"text\nok\ncaf\xe9\n", ["Line 3", "UTF-8"], id="not-utf8"),
        pytest.param(b'text\nok\n"unclosed\nmore\n', ["not valid CSV"], id="unclosed-quote"),
    ],
)
def test_csv_refusals(tmp_path: Path, content: bytes, expected: list[str]) -> None:
    detail = refusal(write(tmp_path, "d.csv", content))
    for fragment in expected:
        assert fragment in detail


def test_unsupported_suffix(tmp_path: Path) -> None:
    assert ".jsonl or .csv" in refusal(write(tmp_path, "d.parquet", b"PAR1"))


def test_a_100_mb_line_is_refused_without_reading_it_whole(tmp_path):
    import resource

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"text": "ok"}\n{"text": "')
        for _ in range(100):
            handle.write(b"a" * (1 << 20))
        handle.write(b'"}\n')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    detail = refusal(path)
    assert "Line 2 is longer than 1024 KiB" in detail
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB
