"""Where each recipe step of a job stands, from the job's status, its last stage and its report."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.jobs.orm import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, Job
from workers.engine.checkpoints.settings import progress_text
from workers.engine.stages import stage_phase, step_number

StepState = Literal["pending", "running", "done", "failed", "cancelled", "timed out", "not run"]


class StepProgress(BaseModel):
    index: int = Field(description="1-based position in the recipe.")
    technique: str
    state: StepState
    wall_time_s: float | None = Field(None, description="From the report, once the job has succeeded.")
    size_bytes_after: int | None = Field(None, description="From the report, once the job has succeeded.")
    resumed_from_attempt: int | None = Field(
        None, description="From the report: the last attempt did not run this step, it restored the checkpoint this "
        "earlier attempt saved after it."
    )
    resumed_inside: str | None = Field(
        None, description="From the report: the last attempt ran this step on from where an earlier attempt's "
        "checkpoint inside it left it, e.g. \"layer 25 of 33\" (llm_quantize)."
    )




def step_progress(job: Job) -> list[StepProgress]:
    steps = job.recipe.get("steps", [])
    report = (job.report or {}) if job.status == SUCCEEDED else {}
    reported = report.get("steps", [])
    inside = ((report.get("job") or {}).get("checkpoints") or {}).get("resumed_within_step")
    states = _states(job, len(steps))
    return [
        StepProgress(
            index=index + 1,
            technique=str(step.get("technique", "")),
            state=states[index],
            **_measured(reported, index),
            resumed_inside=progress_text(inside) if inside and inside.get("step") == index + 1 else None,
        )
        for index, step in enumerate(steps)
    ]


def _states(job: Job, count: int) -> list[str]:
    if job.status == SUCCEEDED:
        return ["done"] * count
    phase = stage_phase(job.stage)
    if phase == "after_steps":
        return ["done"] * count
    # On a job that ended early, the step it stopped in failed (or was cancelled); later ones never ran.
    stopped = {FAILED: "failed", CANCELLED: "cancelled", TIMED_OUT: "timed out"}.get(job.status)
    current_state = stopped or "running"
    later_state = "not run" if stopped else "pending"
    if phase == "before_steps":
        return [later_state] * count
    current = step_number(job.stage) or 0
    return [
        "done" if number < current else current_state if number == current else later_state
        for number in range(1, count + 1)
    ]


def _measured(reported: list[dict[str, Any]], index: int) -> dict[str, Any]:
    if index >= len(reported):
        return {}
    return {name: reported[index].get(name) for name in ("wall_time_s", "size_bytes_after", "resumed_from_attempt")}
