"""Names of the stages a job reports as progress, and where each lies relative to the recipe's steps.

The pipeline reports "load", "evaluate_original.outputs", ..., then one "step_<n>.<technique>" per
recipe step, then "package", "evaluate_result.latency", ...; callers use `stage_phase` to tell
which steps a stage means are done, without knowing every stage name.
"""

import re
from typing import Literal

STEP_STAGE = re.compile(r"step_(?P<index>\d+)\.(?P<technique>[a-z0-9_]+)")
# Stages that come after every step; any other stage that is not a step comes before them
# (including the worker's own, such as "starting" or "requeued: ...").
AFTER_STEPS = ("package", "evaluate_result", "inference_energy.result", "report", "done")

StagePhase = Literal["before_steps", "step", "after_steps"]


def step_stage(index: int, technique: str) -> str:
    """The stage of the recipe's step `index` (0-based), e.g. "step_1.quantize"."""
    return f"step_{index + 1}.{technique}"


def step_number(stage: str | None) -> int | None:
    """The 1-based step a stage belongs to, or None when it is not a step's stage."""
    match = STEP_STAGE.fullmatch(stage or "")
    return int(match["index"]) if match else None


def stage_phase(stage: str | None) -> StagePhase:
    if step_number(stage) is not None:
        return "step"
    if stage and any(stage == name or stage.startswith(name + ".") for name in AFTER_STEPS):
        return "after_steps"
    return "before_steps"
