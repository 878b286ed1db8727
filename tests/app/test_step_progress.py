"""Each recipe step's state, from the job's status and the stage it is in (or stopped in)."""

import pytest

from app.jobs.orm import Job
from app.jobs.step_progress import step_progress
from workers.engine.stages import stage_phase

RECIPE = {"steps": [{"technique": "low_rank"}, {"technique": "quantize"}]}


def states(status: str, stage: str | None, report: dict | None = None) -> list[str]:
    job = Job(status=status, stage=stage, recipe=RECIPE, report=report)
    return [step.state for step in step_progress(job)]


@pytest.mark.parametrize(
    ("status", "stage", "expected"),
    [
        ("queued", None, ["pending", "pending"]),
        ("running", "starting", ["pending", "pending"]),
        ("running", "evaluate_original.latency", ["pending", "pending"]),
        ("running", "step_1.low_rank", ["running", "pending"]),
        ("running", "step_2.quantize", ["done", "running"]),
        ("running", "evaluate_result.outputs", ["done", "done"]),
        ("running", "inference_energy.result", ["done", "done"]),
        ("queued", "requeued: worker lost", ["pending", "pending"]),
        ("failed", "step_2.quantize", ["done", "failed"]),
        ("failed", "load", ["not run", "not run"]),
        ("cancelled", "step_1.low_rank", ["cancelled", "not run"]),
        ("cancelled", "cancelled", ["not run", "not run"]),
    ],
)
def test_step_states_follow_the_stage(status, stage, expected):
    assert states(status, stage) == expected


def test_a_succeeded_job_shows_each_steps_time_and_size():
    # The first step was restored from attempt 1's checkpoint; the last attempt ran the second.
    report = {"steps": [{"wall_time_s": 1.5, "size_bytes_after": 900, "resumed_from_attempt": 1},
                        {"wall_time_s": 0.5, "size_bytes_after": 300, "resumed_from_attempt": None}]}
    job = Job(status="succeeded", stage="done", recipe=RECIPE, report=report)
    steps = step_progress(job)
    assert [(s.index, s.technique, s.state, s.wall_time_s, s.size_bytes_after, s.resumed_from_attempt)
            for s in steps] == [(1, "low_rank", "done", 1.5, 900, 1), (2, "quantize", "done", 0.5, 300, None)]


def test_a_step_that_went_on_from_a_checkpoint_inside_it_says_from_where():
    report = {"steps": [{"wall_time_s": 1.5, "size_bytes_after": 900, "resumed_from_attempt": 1},
                        {"wall_time_s": 0.5, "size_bytes_after": 300, "resumed_from_attempt": None}],
              "job": {"checkpoints": {"resumed_within_step": {"step": 2, "pass": 2, "passes": 2, "layers_done": 25,
                                                              "layers": 33}}}}
    steps = step_progress(Job(status="succeeded", stage="done", recipe=RECIPE, report=report))
    assert [step.resumed_inside for step in steps] == [None, "pass 2 of 2, layer 25 of 33"]


def test_stage_phases():
    assert stage_phase("step_12.cluster") == "step"
    assert stage_phase("step_1") == "before_steps"
    assert stage_phase("packaged") == "before_steps"  # only the known names, or their sub-stages, are after
    assert stage_phase("package") == "after_steps"
