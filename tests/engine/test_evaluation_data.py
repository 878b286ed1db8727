"""Dataset loading, label mapping and the accuracy/F1 arithmetic."""

import numpy as np
import pytest

from workers.engine.evaluation.data import BUILTIN_SAMPLE_PATH, DatasetError, load_eval_dataset
from workers.engine.evaluation.quality import UNLABELLED, classification_quality, encode_labels
from workers.engine.evaluation.runners import tokenize
from workers.engine.loading import load_tokenizer


def test_builtin_sample_is_used_when_no_file_is_given():
    dataset = load_eval_dataset(None, max_samples=10)
    assert dataset.source == "builtin"
    assert len(dataset) == 10
    assert dataset.labels is None and dataset.text_pairs is None
    assert BUILTIN_SAMPLE_PATH.is_file()


def test_jsonl_with_all_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a", "text_pair": "b", "label": "positive", "slice": "x"}\n\n'
        '{"text": "c", "text_pair": "d", "label": 0, "slice": "y"}\n',
        encoding="utf-8",
    )
    dataset = load_eval_dataset(path, max_samples=256)
    assert dataset.source == "uploaded"
    assert dataset.texts == ["a", "c"] and dataset.text_pairs == ["b", "d"]
    assert dataset.labels == ["positive", 0] and dataset.slices == ["x", "y"]


def test_optional_columns_may_be_on_some_rows_only(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a", "label": 1.0, "text_pair": "b"}\n{"text": "c", "label": null}\n', encoding="utf-8"
    )
    dataset = load_eval_dataset(path, max_samples=256)
    assert dataset.labels == [1, None] and dataset.text_pairs == ["b", None] and dataset.slices is None


def test_csv_with_byte_order_mark_and_spaced_header(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("\ufefftext, label\nhello,positive\n", encoding="utf-8")
    dataset = load_eval_dataset(path, max_samples=256)
    assert dataset.texts == ["hello"] and dataset.labels == ["positive"]


def test_csv_and_max_samples(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nfirst,1\nsecond,0\nthird,1\n", encoding="utf-8")
    dataset = load_eval_dataset(path, max_samples=2)
    assert dataset.texts == ["first", "second"] and dataset.labels == ["1", "0"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.jsonl", '{"text": "a"}\nnot json\n', "Line 2 is not valid JSON"),
        ("d.jsonl", '{"label": 1}\n', "Line 1 has no 'text' column"),
        ("d.jsonl", '{"text": "a", "label": [1]}\n', "Line 1: 'label' must be a class name, a whole class number"),
        ("d.csv", 'text,label\n"unclosed,1\n', "not valid CSV"),
        ("d.csv", "sentence\nhello\n", "unknown column 'sentence'"),
        ("d.txt", "hello\n", "must be a .jsonl or .csv file"),
        ("d.jsonl", "", "no rows"),
    ],
)
def test_bad_files_say_what_to_fix(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_eval_dataset(path, max_samples=256)


def test_labels_map_by_name_or_integer_id():
    ids = encode_labels(["positive", 0, "1", "negative", None], {"negative": 0, "positive": 1}, num_labels=2)
    assert ids.tolist() == [1, 0, 1, 0, UNLABELLED]


def test_rows_with_and_without_a_pair_tokenize_in_one_batch(tiny_models):
    tokenizer = load_tokenizer(tiny_models["classifier"])
    mixed = tokenize(tokenizer, ["good phone", "bad food"], ["great", None], sequence_length=16)
    assert mixed["input_ids"].shape[0] == 2
    # The pair is encoded as segment 1; the row without a pair has none.
    assert mixed["token_type_ids"][0].max() == 1 and mixed["token_type_ids"][1].max() == 0
    alone = tokenize(tokenizer, ["bad food"], None, sequence_length=16)
    length = int(alone["attention_mask"].sum())
    assert mixed["input_ids"][1, :length].tolist() == alone["input_ids"][0, :length].tolist()


@pytest.mark.parametrize("label", ["neutral", 2, "-1"])
def test_unknown_label_is_a_clear_error(label):
    with pytest.raises(DatasetError, match="is not a class of this model.*'negative'"):
        encode_labels([label], {"negative": 0, "positive": 1}, num_labels=2)


def test_accuracy_and_macro_f1():
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 0])
    scores = classification_quality(labels, predictions)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    # Per class F1: 0 -> 0.5, 1 -> 0.8, 2 -> 0.0.
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
