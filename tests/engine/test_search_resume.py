"""A goal job's checkpoints: one after every candidate, which a new attempt resumes from without measuring
those candidates again, its sampler told what the earlier attempt learnt; one that does not fit the job
is refused and the search starts over."""

import json

import pytest

from tests.engine.conftest import FAST_EVAL
from workers.engine.checkpoints.settings import CheckpointSettings

EVAL = {**FAST_EVAL, "max_samples": 32}
GOAL = {"min_fidelity": 0.99, "objective": "smallest", "max_candidates": 4, "search_rows": 32,
        "families": ["half", "int8", "int4", "cluster"]}
KEY = "a" * 64


def run_goal(model_dir, work, checkpoints, goal=GOAL):
    from workers.engine.pipeline import PipelineRequest, run_pipeline

    request = PipelineRequest(
        model_dir=model_dir, goal=goal, work_dir=work / "work", output_dir=work / "out", eval=EVAL,
        checkpoints=checkpoints,
    )
    events = []
    report = run_pipeline(request, lambda stage, fraction: None, events.append).report
    return report, [event for event in events if event.get("event") == "checkpoint"]


@pytest.fixture(scope="module")
def first_attempt(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("attempt-1")
    settings = CheckpointSettings(key=KEY, attempt=1, save_dir=root / "saved")
    return (*run_goal(tiny_models["encoder"], root, settings), root)


def test_a_checkpoint_follows_every_candidate_and_supersedes_the_one_before(first_attempt):
    report, events, root = first_attempt
    assert [event["step"] for event in events] == [1, 2, 3, 4]
    assert all(event["supersedes_earlier"] for event in events)
    manifest = json.loads((root / "saved" / "step-02" / "manifest.json").read_text())
    assert manifest["kind"] == "goal_search" and manifest["candidates_done"] == 2
    assert [item["number"] for item in manifest["measured"]] == [1, 2] and len(manifest["trials"]) == 1
    saved = report["job"]["checkpoints"]["saved"]
    assert [item["step"] for item in saved] == [1, 2, 3, 4] and all(item["size_bytes"] > 0 for item in saved)


def test_a_new_attempt_goes_on_after_the_candidates_already_measured(first_attempt, tiny_models, tmp_path):
    first, _, root = first_attempt
    settings = CheckpointSettings(key=KEY, attempt=2, save_dir=tmp_path / "saved", resume_dir=root / "saved" / "step-02")
    report, events = run_goal(tiny_models["encoder"], tmp_path, settings)
    checkpoints = report["job"]["checkpoints"]
    assert checkpoints["resumed_from_attempt"] == 1 and checkpoints["resumed_steps"] == [1, 2]
    assert checkpoints["problem"] is None
    # Only candidates 3 and 4 ran in this attempt; 1 and 2 are the first attempt's, as it measured them.
    assert [event["step"] for event in events] == [3, 4]
    candidates, earlier = report["search"]["candidates"], first["search"]["candidates"]
    assert [c["description"] for c in candidates] == [c["description"] for c in earlier]
    for mine, theirs in zip(candidates[:2], earlier[:2]):
        assert mine["fidelity"] == theirs["fidelity"] and mine["size_bytes"] == theirs["size_bytes"]
    stages = [stage["stage"] for stage in report["energy"]["stages"]]
    assert not any(stage.startswith(("search.01.", "search.02.")) for stage in stages)
    assert any(stage.startswith("attempt_1.search.02.") for stage in stages)
    assert any(stage.startswith("search.03.") for stage in stages)
    # The same choice as the uninterrupted search, shipped and measured the same way.
    assert report["job"]["recipe"] == first["job"]["recipe"]
    assert report["result"]["size_bytes"] == first["result"]["size_bytes"]


def test_a_checkpoint_of_another_goal_is_not_resumed(first_attempt, tiny_models, tmp_path):
    _, _, root = first_attempt
    settings = CheckpointSettings(key="b" * 64, attempt=2, resume_dir=root / "saved" / "step-02")
    report, events = run_goal(tiny_models["encoder"], tmp_path, settings, {**GOAL, "max_candidates": 2})
    checkpoints = report["job"]["checkpoints"]
    assert checkpoints["resumed_from_attempt"] is None and "another goal" in checkpoints["problem"]
    assert len(report["search"]["candidates"]) == 2 and events == []  # no save_dir: nothing saved


def test_a_search_resumed_at_its_end_ships_the_choice_the_checkpoint_kept(first_attempt, tiny_models, tmp_path):
    first, _, root = first_attempt
    settings = CheckpointSettings(key=KEY, attempt=2, save_dir=tmp_path / "saved", resume_dir=root / "saved" / "step-02")
    report, events = run_goal(tiny_models["encoder"], tmp_path, settings, {**GOAL, "max_candidates": 2})
    assert events == [] and report["search"]["stopped_because"].startswith("max_candidates")
    chosen = next(c for c in report["search"]["candidates"] if c["chosen"])
    assert chosen["number"] in (1, 2) and report["result"]["size_bytes"] == chosen["size_bytes"]
    assert report["job"]["recipe"] == chosen["recipe"]
    assert not any(stage["stage"].startswith("search.0") for stage in report["energy"]["stages"])
