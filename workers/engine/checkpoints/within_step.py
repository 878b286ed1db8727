"""Checkpoints inside a step. A step that can stop part-way and go on from there (llm_quantize, between
decoder layers, where one step of an 8B model is most of the job) finds a WithinStep in its context: it
saves its own files every `interval_s` and hands them over with how far it got. The checkpoint then holds
the state before the step, those files, the reports of the steps before and the energy used so far, the
step's own share included (workers.engine.checkpoints.recipe_run). A new attempt finds them in `resume`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.engine.checkpoints.store import InStep, PretrainedBase


@dataclass(frozen=True)
class WithinStep:
    interval_s: float  # the least time between two of the step's checkpoints
    resume: InStep | None  # what an earlier attempt saved inside this step; None: start at its beginning
    # save(files, progress, state before the step): `files` is moved into the checkpoint; None when this
    # attempt saves no checkpoints.
    save: Callable[[Path, dict, PretrainedBase | None], None] | None

