"""Label suggestions: the greedy pick spreads over the space and prefers uncertain rows, the uncertainty
comes from a probe, the model or nowhere as the labels allow, and the engine command runs end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from workers.engine.errors import EngineUserError
from workers.engine.label_suggestions import diverse_pick, margin_uncertainty, suggest, suggest_labels


def clusters(per_cluster: int = 5, seed: int = 0) -> np.ndarray:
    """Three tight groups of unit vectors, along three axes."""
    rng = np.random.default_rng(seed)
    points = []
    for axis in range(3):
        centre = np.zeros(8)
        centre[axis] = 1
        points.append(centre + rng.normal(scale=0.05, size=(per_cluster, 8)))
    stacked = np.concatenate(points)
    return stacked / np.linalg.norm(stacked, axis=1, keepdims=True)


def test_without_uncertainty_the_pick_is_one_row_per_group():
    embeddings = clusters()
    picked = diverse_pick(embeddings, np.arange(15), np.array([], dtype=int), None, 3)
    assert sorted(row // 5 for row in picked) == [0, 1, 2]


def test_rows_near_labelled_ones_come_last():
    embeddings = clusters()
    anchors = np.array([0, 5])  # groups 0 and 1 already have a label
    candidates = np.array([row for row in range(15) if row not in anchors])
    assert diverse_pick(embeddings, candidates, anchors, None, 1)[0] // 5 == 2


def test_uncertainty_decides_between_rows_equally_far():
    embeddings = clusters()
    uncertainty = np.full(15, 0.1)
    uncertainty[7] = 0.9  # in group 1
    anchors = np.array([0])
    candidates = np.array([row for row in range(15) if row != 0])
    assert diverse_pick(embeddings, candidates, anchors, uncertainty, 1) == [7]


def test_margin_uncertainty():
    probabilities = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert margin_uncertainty(probabilities) == pytest.approx([1.0, 0.0, 0.7])


def test_the_method_follows_the_labels_available():
    embeddings = clusters()
    names = [None] * 15
    method, classes, rows, uncertainty, _ = suggest(embeddings, names, 3)
    assert (method, classes, uncertainty) == ("diversity", [], None) and len(rows) == 3

    probabilities = np.tile([0.7, 0.3], (15, 1))
    method, classes, _, uncertainty, predicted = suggest(embeddings, names, 3, probabilities, ["x", "y"])
    assert (method, classes) == ("model", ["x", "y"]) and uncertainty == pytest.approx(np.full(15, 0.6))

    names[0], names[1], names[5], names[6] = "first", "first", "second", "second"
    method, classes, rows, uncertainty, predicted = suggest(embeddings, names, 4)
    assert (method, classes) == ("probe", ["first", "second"])
    assert not {0, 1, 5, 6} & set(rows)
    # The probe has never seen group 2: its rows are the least certain, and the first picked.
    assert rows[0] // 5 == 2 and uncertainty[10:].mean() > uncertainty[:10].mean()
    assert predicted[2] == 0 and predicted[7] == 1


def write_rows(path, rows):  # noqa: ANN001
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_suggest_labels_returns_unlabelled_rows_of_the_file(tiny_models, tmp_path):
    rows = [{"text": f"the bank price {index}", "label": "money"} for index in range(3)]
    rows += [{"text": f"the team game {index}", "label": "sport"} for index in range(3)]
    rows += [{"text": text} for text in ("a good film", "the phone book", "a fast run", "water and food")]
    result = suggest_labels(tiny_models["encoder"], write_rows(tmp_path / "pool.jsonl", rows), 3)
    assert (result.method, result.labelled_rows, result.unlabelled_rows) == ("probe", 6, 4)
    assert result.classes == ["money", "sport"]
    assert len(result.rows) == 3 and {item["row"] for item in result.rows} <= {6, 7, 8, 9}
    for item in result.rows:
        assert item["text"] == rows[item["row"]]["text"]
        assert item["predicted"] in ("money", "sport") and 0 <= item["uncertainty"] <= 1


def test_suggest_labels_refuses_what_it_cannot_do(tiny_models, tmp_path):
    labelled = write_rows(tmp_path / "done.jsonl", [{"text": "one", "label": "a"}])
    with pytest.raises(EngineUserError, match="labelled already"):
        suggest_labels(tiny_models["encoder"], labelled, 1)
    texts = write_rows(tmp_path / "texts.jsonl", [{"text": "one"}])
    with pytest.raises(EngineUserError, match="text-generation"):
        suggest_labels(tiny_models["causal-lm"], texts, 1)
    with pytest.raises(EngineUserError, match="between 1 and"):
        suggest_labels(tiny_models["encoder"], texts, 0)


def test_the_engine_command_writes_the_suggestions(tiny_models, tmp_path):
    dataset = write_rows(tmp_path / "pool.jsonl", [{"text": "one two"}, {"text": "three"}, {"text": "four five"}])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model_dir": str(tiny_models["classifier"]), "dataset_path": str(dataset), "n": 2,
                                "output_path": str(tmp_path / "out.json")}))
    finished = subprocess.run([sys.executable, "-m", "workers.engine", "suggest-labels", "--spec", str(spec)],
                              capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.splitlines()[-1]) == {"event": "done", "output_path": str(tmp_path / "out.json")}
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["method"] == "model" and result["classes"] == ["negative", "positive"] and len(result["rows"]) == 2

    spec.write_text(json.dumps({"model_dir": str(tiny_models["classifier"]), "dataset_path": str(dataset), "n": 0,
                                "output_path": str(tmp_path / "out.json")}))
    finished = subprocess.run([sys.executable, "-m", "workers.engine", "suggest-labels", "--spec", str(spec)],
                              capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 2 and "between 1 and" in json.loads(finished.stdout.splitlines()[-1])["message"]
