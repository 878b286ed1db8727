"""When a running job must stop: the job's soft and hard limits and each step's own, on a given clock."""

from app.config import TimeLimitSettings
from workers.tasks.time_limits import Deadlines

RECIPE = {"steps": [{"technique": "low_rank", "params": {"energy": 0.9, "time_limit_seconds": 30}},
                    {"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


def deadlines(**limits) -> Deadlines:
    settings = TimeLimitSettings(soft_seconds=100, hard_seconds=160, grace_seconds=5, per_technique={"quantize": 50})
    made = Deadlines.for_job(settings, limits or None, RECIPE)
    made.started = 0.0
    return made


def test_limits_come_from_the_job_the_step_and_the_settings():
    made = deadlines()
    assert (made.job_soft_seconds, made.job_hard_seconds) == (100, 160)
    assert made.step_soft_seconds == {1: 30.0, 2: 50.0}  # the step's own, then the technique's default
    assert deadlines(soft_seconds=10).job_hard_seconds == 160
    assert deadlines(soft_seconds=500).job_hard_seconds == 500  # never below the soft limit


def test_the_job_soft_limit_fires_once_then_the_hard_one():
    made = deadlines()
    assert made.soft_limit_passed(99) is None
    assert "soft time limit of 100 s" in made.soft_limit_passed(101)
    assert made.soft_limit_passed(102) is None  # asked once
    assert made.hard_limit_passed(150) is None
    assert "hard time limit of 160 s" in made.hard_limit_passed(161)


def test_a_step_limit_counts_from_the_steps_start_and_kills_after_the_grace():
    made = deadlines()
    made.on_stage("evaluate_original.latency")
    made.on_stage("step_1.low_rank")
    made.step_started = 40.0
    assert made.soft_limit_passed(69) is None
    assert made.soft_limit_passed(71) == "step 1 ran past its time limit of 30 s"
    assert made.hard_limit_passed(75) is None
    assert "had not stopped 5 s later" in made.hard_limit_passed(77)


def test_a_new_step_restarts_the_step_clock():
    made = deadlines()
    made.on_stage("step_1.low_rank")
    first = made.step_started
    made.on_stage("step_1.low_rank")  # the same step again: no restart
    assert made.step_started == first
    made.on_stage("step_2.quantize")
    assert made.step == 2 and made.step_started >= first
    made.on_stage("package")
    assert made.step is None  # no step limit outside the steps
