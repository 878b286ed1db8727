"""Accuracy and macro-F1 of a classifier against the dataset's labels."""

from collections.abc import Mapping

import numpy as np

from workers.engine.evaluation.data import DatasetError, EvalDataset


UNLABELLED = -1


def encode_labels(labels: list[str | int | None], label2id: Mapping[str, int], num_labels: int) -> np.ndarray:
    """Maps each label to a class id (a name from config.label2id, or an integer id); rows without
    a label get UNLABELLED and are left out of accuracy and F1."""
    ids = []
    for row, label in enumerate(labels, start=1):
        if label is None:
            ids.append(UNLABELLED)
            continue
        if isinstance(label, str) and label in label2id:
            ids.append(int(label2id[label]))
            continue
        # CSV cells are always strings, so "1" is read as the class id 1.
        text = str(label).strip()
        if text.lstrip("-").isdigit() and 0 <= int(text) < num_labels:
            ids.append(int(text))
            continue
        names = ", ".join(repr(name) for name in label2id)
        raise DatasetError(
            f"Row {row}: label {label!r} is not a class of this model. Use a name from its config.label2id "
            f"({names}) or an integer id from 0 to {num_labels - 1}."
        )
    return np.asarray(ids, dtype=np.int64)


def classification_quality(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Macro-F1 over the classes seen in the labels or the predictions (as scikit-learn does)."""
    classes = np.union1d(labels, predictions)
    f1_scores = []
    for cls in classes:
        true_positive = np.sum((predictions == cls) & (labels == cls))
        predicted = np.sum(predictions == cls)
        actual = np.sum(labels == cls)
        denominator = predicted + actual
        f1_scores.append(2 * true_positive / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(labels == predictions)), "macro_f1": float(np.mean(f1_scores))}


def dataset_label_ids(dataset: EvalDataset, task: str, config, new_task: bool = False) -> np.ndarray | None:  # noqa: ANN001
    """The dataset's labels as class ids of `config` (label2id, num_labels), for a classifier; None for other
    tasks, where labels mean nothing. With `new_task` (a finetune step trains for the dataset's classes),
    labels the model does not know give None instead of an error."""
    if dataset.labels is None or task != "text-classification":
        return None
    try:
        return encode_labels(dataset.labels, config.label2id, config.num_labels)
    except DatasetError:
        if new_task:
            return None
        raise


def label_names(dataset: EvalDataset) -> list[str | None] | None:
    """The labels as the dataset writes them, as strings (None where a row has none)."""
    if dataset.labels is None:
        return None
    return [None if label is None else str(label) for label in dataset.labels]
