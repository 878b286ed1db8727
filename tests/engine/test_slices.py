"""Per-slice quality: the grouping and flagging rules on synthetic per-row values, then the section
as the pipeline writes it (slice column, per-label fallback, no groups)."""

import json

import numpy as np
import pytest

from tests.engine.conftest import FAST_EVAL, LABELLED_ROWS, QUANTIZE_RECIPE
from workers.engine.evaluation.data import EvalDataset
from workers.engine.evaluation.fidelity import ItemFidelity
from workers.engine.evaluation.quality import UNLABELLED
from workers.engine.evaluation.slices import (
    RowGroups,
    RowScores,
    accuracy_scores,
    compare_slices,
    fidelity_scores,
    row_groups,
)
from workers.engine.pipeline import PipelineRequest, run_pipeline
from workers.engine.recipe import Recipe
from workers.engine.report import Report

# One timed run and the least inference-energy work: these runs check slices and the card, not
# latency or energy (the energy tracker is switched off too: QUICK_ENERGY).
QUICK_EVAL = FAST_EVAL | {
    "latency_batch_sizes": [1], "latency_warmup": 0, "latency_repeats": 1,
    "energy_repeats": 2, "energy_batch_size": 1, "energy_inferences_per_run": 1,
}
QUICK_ENERGY = {"enabled": False}


def _dataset(slices=None, labels=None, rows=4) -> EvalDataset:
    return EvalDataset(texts=["x"] * rows, text_pairs=None, labels=labels, slices=slices, source="uploaded")


# --- Rules, on synthetic per-row values ---

def test_the_slice_that_degrades_is_flagged_and_the_others_are_not():
    names = ["news"] * 10 + ["rare"] * 4 + ["reviews"] * 10 + [None] * 2
    # Accuracy per row: the original is right everywhere; the result loses 1 news row and 3 rare ones.
    before = np.ones(len(names))
    after = before.copy()
    after[[0, 10, 11, 12]] = 0.0
    scores = RowScores("accuracy", weights=np.ones(len(names)), before=before, after=after)
    report = compare_slices(RowGroups("slice", names), scores, margin=0.02)

    assert report.overall.count == 26 and report.overall.drop == pytest.approx(4 / 26)
    by_name = {item.name: item for item in report.slices}
    assert list(by_name) == ["news", "rare", "reviews"]
    assert by_name["rare"].drop == pytest.approx(0.75) and by_name["rare"].flagged and by_name["rare"].small
    assert by_name["news"].drop == pytest.approx(0.1) and not by_name["news"].flagged and not by_name["news"].small
    assert by_name["reviews"].drop == 0.0 and not by_name["reviews"].flagged
    assert report.flagged == ["rare"]
    assert report.ungrouped == 2 and sum(item.count for item in report.slices) + report.ungrouped == 26


def test_the_margin_decides_how_much_worse_than_overall_counts():
    scores = fidelity_scores(
        "feature-extraction", ItemFidelity(np.array([0.99, 0.99, 0.94, 0.94]), None), np.ones(4, dtype=np.int64)
    )
    groups = RowGroups("slice", ["a", "a", "b", "b"])
    assert compare_slices(groups, scores, margin=0.02).flagged == ["b"]  # 0.06 vs overall 0.035
    assert compare_slices(groups, scores, margin=0.05).flagged == []
    report = compare_slices(groups, scores, margin=0.02)
    assert report.metric == "cosine_mean" and report.overall.before == 1.0
    assert report.overall.after == pytest.approx(0.965)


def test_accuracy_leaves_unlabelled_rows_out_and_compares_with_the_original():
    class_ids = np.array([0, 1, UNLABELLED, 1])
    scores = accuracy_scores(class_ids, original=np.array([0, 0, 1, 1]), result=np.array([0, 1, 0, 0]))
    report = compare_slices(RowGroups("slice", ["a", "a", "b", "c"]), scores, margin=0.0)
    # Slice "b" has no labelled row, so it is not listed; "a" improves, "c" gets worse.
    assert [item.name for item in report.slices] == ["a", "c"]
    a, c = report.slices
    assert (a.before, a.after, a.drop) == (0.5, 1.0, -0.5)
    assert (c.before, c.after, c.drop) == (1.0, 0.0, 1.0) and c.flagged
    assert report.overall.count == 3 and report.overall.before == pytest.approx(2 / 3)


def test_language_models_weigh_each_row_by_its_tokens():
    # Row 0 has 3 tokens (all agree); row 1 has 1 token (disagrees).
    items = ItemFidelity(np.array([1.0, 1.0, 1.0, 0.0]), np.zeros(4))
    scores = fidelity_scores("text-generation", items, np.array([3, 1]))
    report = compare_slices(RowGroups("slice", ["long", "short"]), scores, margin=0.02)
    assert report.metric == "token_top1_agreement"
    assert report.overall.after == pytest.approx(0.75)  # the token-level figure, as in the fidelity section
    assert [(item.name, item.count, item.after) for item in report.slices] == [("long", 1, 1.0), ("short", 1, 0.0)]


def test_groups_come_from_the_slice_column_then_the_labels():
    assert row_groups(_dataset(slices=["a", None, "b", "a"]), None) == RowGroups("slice", ["a", None, "b", "a"])
    assert row_groups(_dataset(), None) is None
    labels = ["positive", 1, None, "0"]
    # Without class ids (not a classifier), labels group as written.
    assert row_groups(_dataset(labels=labels), None).names == ["positive", "1", None, "0"]
    # A classifier's ids merge "positive" and 1 under the class name.
    grouped = row_groups(_dataset(labels=labels), np.array([1, 1, UNLABELLED, 0]))
    assert grouped == RowGroups("label", ["positive", "positive", None, "0"])


# --- The section as the pipeline writes it ---

def _run(model_dir, dataset, tmp_path, **eval_changes) -> dict:
    request = PipelineRequest(
        model_dir=model_dir, recipe=Recipe.from_dict(QUANTIZE_RECIPE), dataset_path=dataset,
        work_dir=tmp_path / "work", output_dir=tmp_path / "out", eval=QUICK_EVAL | eval_changes, energy=QUICK_ENERGY,
    )
    return run_pipeline(request, lambda *_: None).report


def _check_consistent(section: dict, num_samples: int) -> None:
    counts = sum(item["count"] for item in section["slices"])
    assert counts + section["ungrouped"] == section["overall"]["count"] <= num_samples
    for item in [section["overall"], *section["slices"]]:
        assert item["drop"] == pytest.approx(item["before"] - item["after"])
    assert section["flagged"] == [item["name"] for item in section["slices"] if item["flagged"]]
    assert all(item["small"] == (item["count"] < section["min_rows"]) for item in section["slices"])


def test_classifier_with_a_slice_column_reports_accuracy_per_slice(pipeline_runs):
    report = pipeline_runs["classifier"].result.report
    section = report["slices"]
    _check_consistent(section, report["evaluation"]["num_samples"])
    assert (section["source"], section["metric"], section["margin"]) == ("slice", "accuracy", 0.02)
    labelled = [row for row in LABELLED_ROWS if "label" in row]
    # "travel" holds only an unlabelled row, so accuracy cannot score it.
    assert [item["name"] for item in section["slices"]] == sorted({row["slice"] for row in labelled})
    assert section["overall"]["count"] == len(labelled) and section["ungrouped"] == 0
    assert section["overall"]["before"] == pytest.approx(report["original"]["quality"]["accuracy"])
    assert section["overall"]["after"] == pytest.approx(report["result"]["quality"]["accuracy"])
    assert all(item["small"] for item in section["slices"])  # at most 2 rows each


@pytest.mark.parametrize("kind", ["encoder", "causal-lm"])
def test_builtin_sample_has_no_slices_but_an_overall_figure(pipeline_runs, kind):
    report = pipeline_runs[kind].result.report
    section = report["slices"]
    assert section["source"] is None and section["slices"] == [] and section["flagged"] == []
    fidelity = report["fidelity"]
    assert section["metric"] == fidelity["primary_metric"] and section["overall"]["before"] == 1.0
    assert section["overall"]["after"] == pytest.approx(fidelity["metrics"][fidelity["primary_metric"]])
    assert section["ungrouped"] == section["overall"]["count"] == report["evaluation"]["num_samples"]


def test_classifier_without_a_slice_column_falls_back_to_labels(tiny_models, tmp_path):
    rows = [{key: value for key, value in row.items() if key != "slice"} for row in LABELLED_ROWS]
    dataset = tmp_path / "no-slices.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = _run(tiny_models["classifier"], dataset, tmp_path)
    section = report["slices"]
    _check_consistent(section, len(rows))
    assert (section["source"], section["metric"]) == ("label", "accuracy")
    assert [(item["name"], item["count"]) for item in section["slices"]] == [("negative", 3), ("positive", 3)]


def test_encoder_with_slices_uses_fidelity_and_flags_by_the_margin(tiny_models, tmp_path):
    texts = ["Please call me back.", "The bank kept rates.", "Our team won the game.", "Where is the station?"]
    rows = [{"text": f"{text} {index}", "slice": f"s{index % 3}"} for index, text in enumerate(texts * 3)]
    dataset = tmp_path / "sliced.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = _run(tiny_models["encoder"], dataset, tmp_path, slice_margin=0.0)
    Report.model_validate(report)
    section = report["slices"]
    _check_consistent(section, len(rows))
    assert (section["source"], section["metric"], section["margin"]) == ("slice", "cosine_mean", 0.0)
    assert [(item["name"], item["count"]) for item in section["slices"]] == [("s0", 4), ("s1", 4), ("s2", 4)]
    assert all(item["before"] == 1.0 for item in section["slices"])
    # With a zero margin, exactly the slices worse than the whole are flagged.
    overall = section["overall"]["drop"]
    assert section["flagged"] == [item["name"] for item in section["slices"] if item["drop"] > overall]
    assert np.mean([item["after"] for item in section["slices"]]) == pytest.approx(section["overall"]["after"])
