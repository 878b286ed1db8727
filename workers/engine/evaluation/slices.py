"""Per-slice quality before and after compression: does the result hurt some groups of rows more
than the whole? Compression tends to forget rare, under-represented examples first (Hooker et al.,
"What do compressed deep neural networks forget?", 2019), which an overall average hides.

Groups come from the dataset's `slice` column, else from its labels. The metric is accuracy for a
labelled classifier, else the task's fidelity metric, for which the original scores 1.0 by
definition. Everything is regrouped from per-row values the evaluation already computed.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from workers.engine.architectures.tasks import Task
from workers.engine.evaluation.data import EvalDataset
from workers.engine.evaluation.evaluate import PreparedInputs
from workers.engine.evaluation.fidelity import PRIMARY_METRIC, ItemFidelity, items_per_row
from workers.engine.evaluation.quality import UNLABELLED
from workers.engine.report import OverallSliceQuality, SliceResult, SlicesReport

# Below this many scored rows one row moves a slice's accuracy by 20 points or more, so the
# figure is marked small. Small slices are still flagged: rare groups are exactly the ones
# compression hurts first, so hiding them would hide the signal; the mark tells the reader to
# check the rows before trusting the number.
SMALL_SLICE_ROWS = 5


@dataclass(frozen=True)
class RowGroups:
    source: Literal["slice", "label"]
    names: list[str | None]  # one per row; None where a row names no group


@dataclass(frozen=True)
class RowScores:
    """A metric as per-row sums and weights, so a group's value is sum(values) / sum(weights):
    weight 1 per scored row (0 for unscored ones), or a language model row's token count."""

    metric: str
    weights: np.ndarray
    before: np.ndarray
    after: np.ndarray


def row_groups(dataset: EvalDataset, class_ids: np.ndarray | None) -> RowGroups | None:
    """Slices from the `slice` column, else one per label, else None.

    With `class_ids` (a classifier's encoded labels), rows are grouped by class, so "positive" and
    1 fall together; the group takes the first class name a row uses, else the id."""
    if dataset.slices is not None:
        return RowGroups("slice", list(dataset.slices))
    if dataset.labels is None:
        return None
    if class_ids is None:
        return RowGroups("label", [None if label is None else str(label) for label in dataset.labels])
    class_names: dict[int, str] = {}
    for class_id, label in zip(class_ids.tolist(), dataset.labels, strict=True):
        # A string that is not the id itself ("positive", not "1") is the class's name.
        if class_id != UNLABELLED and isinstance(label, str) and label.strip() != str(class_id):
            class_names.setdefault(class_id, label)
    return RowGroups(
        "label",
        [None if cid == UNLABELLED else class_names.get(cid, str(cid)) for cid in class_ids.tolist()],
    )


def accuracy_scores(class_ids: np.ndarray, original: np.ndarray, result: np.ndarray) -> RowScores:
    """Correctness per labelled row; unlabelled rows weigh nothing."""
    labelled = class_ids != UNLABELLED
    return RowScores(
        metric="accuracy",
        weights=labelled.astype(np.float64),
        before=((original == class_ids) & labelled).astype(np.float64),
        after=((result == class_ids) & labelled).astype(np.float64),
    )


def fidelity_scores(task: Task, items: ItemFidelity, per_row: np.ndarray) -> RowScores:
    """The task's fidelity per row: cosine or agreement, or agreeing tokens out of the row's tokens."""
    rows = np.repeat(np.arange(len(per_row)), per_row)
    weights = per_row.astype(np.float64)
    return RowScores(
        metric=PRIMARY_METRIC[task],
        weights=weights,
        before=weights.copy(),  # the original reproduces itself: 1.0 per item
        after=np.bincount(rows, weights=items.primary, minlength=len(per_row)),
    )


def _quality(scores: RowScores, rows: np.ndarray) -> tuple[float, float]:
    weight = scores.weights[rows].sum()
    return float(scores.before[rows].sum() / weight), float(scores.after[rows].sum() / weight)


def compare_slices(
    groups: RowGroups | None, scores: RowScores, margin: float, min_rows: int = SMALL_SLICE_ROWS
) -> SlicesReport:
    """Each group's before/after/drop against the overall drop; groups without a scored row
    (e.g. no labelled row under accuracy) are left out."""
    scored = scores.weights > 0
    before, after = _quality(scores, scored)
    overall = OverallSliceQuality(count=int(scored.sum()), before=before, after=after, drop=before - after)
    slices = []
    if groups is not None:
        names = np.array(groups.names, dtype=object)
        present = {name for name, keep in zip(groups.names, scored, strict=True) if keep and name is not None}
        for name in sorted(present):
            rows = scored & (names == name)
            before, after = _quality(scores, rows)
            drop = before - after
            slices.append(
                SliceResult(
                    name=name, count=int(rows.sum()), before=before, after=after, drop=drop,
                    flagged=drop - overall.drop > margin, small=int(rows.sum()) < min_rows,
                )
            )
    return SlicesReport(
        source=groups.source if groups is not None else None,
        metric=scores.metric,
        margin=margin,
        min_rows=min_rows,
        overall=overall,
        ungrouped=overall.count - sum(item.count for item in slices),
        slices=slices,
        flagged=[item.name for item in slices if item.flagged],
    )


def slices_report(
    task: Task,
    dataset: EvalDataset,
    inputs: PreparedInputs,
    reference_predictions: np.ndarray | None,
    result_predictions: np.ndarray | None,
    items: ItemFidelity,
    margin: float,
) -> SlicesReport:
    """The pipeline's entry point: picks the metric, then groups the rows. The reference is the original,
    or the model a finetune step made when the recipe has one."""
    if task == "text-classification" and inputs.labels is not None:
        scores = accuracy_scores(inputs.labels, reference_predictions, result_predictions)
    else:
        per_row = np.concatenate([items_per_row(task, batch["attention_mask"]) for batch in inputs.batches])
        scores = fidelity_scores(task, items, per_row)
    return compare_slices(row_groups(dataset, inputs.labels), scores, margin)
