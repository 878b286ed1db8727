"""Runs a job's recipe steps with checkpoints: resumes after the last step an earlier attempt saved (or inside
a step, where the step saved its own progress), and saves one after every step this attempt runs, and
inside the steps that can go on part-way, announcing each so that the worker stores it."""

import functools
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from workers.engine.checkpoints.settings import CheckpointSettings, progress_text
from workers.engine.checkpoints.store import (
    CheckpointError, InStep, PretrainedBase, Restored, load_checkpoint, save_checkpoint,
)
from workers.engine.checkpoints.within_step import WithinStep
from workers.engine.devices import GpuMemoryPeak
from workers.engine.energy.meter import EnergyMeter
from workers.engine.energy.schema import StageEnergy
from workers.engine.evaluation.quality import encode_labels
from workers.engine.evaluation.step_probe import StepProbe
from workers.engine.registry import TechniqueConfig
from workers.engine.report import CheckpointSaved, CheckpointsReport, StepReport
from workers.engine.stages import STEP_STAGE
from workers.engine.state import ModelState
from workers.engine.steps import StepEnvironment, apply_steps

logger = logging.getLogger(__name__)

EARLIER_ATTEMPT = re.compile(r"attempt_\d+\..+")
ENERGY_NOTE = (
    "Stages named attempt_<n>.<stage>, and the steps restored from a checkpoint, were measured by earlier "
    "attempts and are counted in the totals; a checkpoint taken inside a step carries that step's energy up to "
    "it. What an earlier attempt spent after its last checkpoint was never reported by it, so it is not counted."
)


def carried_stages(stages: list[StageEnergy], attempt: int) -> list[StageEnergy]:
    """An earlier attempt's stages as this attempt books them: its steps (and their sites' stages) keep their
    names (they are this job's steps, not run again); every other stage is prefixed with the attempt that
    measured it."""
    return [
        stage if STEP_STAGE.match(stage.stage) or EARLIER_ATTEMPT.fullmatch(stage.stage)
        else stage.model_copy(update={"stage": f"attempt_{attempt}.{stage.stage}"})
        for stage in stages
    ]


def _restore(
    settings: CheckpointSettings, steps: tuple[TechniqueConfig, ...], environment: StepEnvironment,
    original_dir: Path, reference_dir: Path,
) -> Restored:
    restored = load_checkpoint(
        settings.resume_dir, key=settings.key, original_dir=original_dir, device=environment.device,
        reference_dir=reference_dir,
    )
    first = 0 if restored.in_step is not None else 1  # a checkpoint inside step 1 holds no step
    if not first <= restored.steps_done <= len(steps) or len(restored.step_reports) != restored.steps_done:
        raise CheckpointError(f"it holds {restored.steps_done} steps of a {len(steps)}-step recipe")
    in_step = restored.in_step
    if in_step is not None and (
        in_step.step != restored.steps_done + 1 or in_step.step > len(steps)
        or steps[in_step.step - 1].technique != in_step.technique
    ):
        raise CheckpointError(f"its progress inside step {in_step.step} ({in_step.technique}) is not this recipe's")
    for step, report in zip(steps, restored.step_reports):
        if report.technique != step.technique:
            raise CheckpointError(f"its step {report.technique} is not the recipe's {step.technique}")
    return restored


class _Saver:
    """Saves the checkpoint after each step and tells the worker where it is."""

    def __init__(self, settings: CheckpointSettings, original_dir: Path, meter: EnergyMeter, step_probe: StepProbe,
                 announce: Callable[[dict], None], report: CheckpointsReport):
        self.settings, self.original_dir, self.meter, self.step_probe = settings, original_dir, meter, step_probe
        self.announce, self.report = announce, report
        self.within_saves = 0

    def __call__(self, index: int, state: ModelState, reports: list[StepReport]) -> None:
        started = time.perf_counter()
        folder = self.settings.save_dir / f"step-{index + 1:02d}"
        try:
            size = save_checkpoint(
                folder, key=self.settings.key, attempt=self.settings.attempt, steps_done=index + 1, state=state,
                original_dir=self.original_dir, step_reports=reports, energy_stages=self.meter.stages(),
                task_reference=self.step_probe.task_reference,
            )
        except Exception as exc:  # noqa: BLE001 - a checkpoint only saves work; the job goes on without it
            logger.warning("the checkpoint after step %d could not be saved", index + 1, exc_info=True)
            self.report.not_saved.append(f"step {index + 1}: {type(exc).__name__}: {exc}"[:500])
            shutil.rmtree(folder, ignore_errors=True)
            return
        seconds = time.perf_counter() - started
        self.report.saved.append(CheckpointSaved(step=index + 1, seconds=seconds, size_bytes=size))
        logger.info("checkpoint after step %d saved: %.2f MB in %.1f s", index + 1, size / 1e6, seconds)
        self.announce({"event": "checkpoint", "step": index + 1, "path": str(folder)})

    def within(self, index: int, technique: str, reports: list[StepReport], files: Path, progress: dict,
               base: PretrainedBase | None) -> None:
        """A checkpoint inside step `index`: the state before it (`base`; the uploaded model for the first
        step), the step's `files` and `progress`, and the energy so far with the step's share split off
        under this attempt's name (the next attempt books it; this one may never end the step)."""
        self.within_saves += 1
        folder = self.settings.save_dir / f"step-{index + 1:02d}-within-{self.within_saves:03d}"
        started = time.perf_counter()
        stages = self.meter.stages()
        share = self.meter.split_open_stage()
        if share is not None:
            stages.append(share.model_copy(update={"stage": f"attempt_{self.settings.attempt}.{share.stage}"}))
        try:
            size = save_checkpoint(
                folder, key=self.settings.key, attempt=self.settings.attempt, steps_done=index, state=None,
                original_dir=self.original_dir, step_reports=reports[:index], energy_stages=stages,
                task_reference=self.step_probe.task_reference, in_step=InStep(index + 1, technique, progress, files),
                pretrained_base=None if index == 0 else base,
            )
        except Exception as exc:  # noqa: BLE001 - a checkpoint only saves work; the step goes on without it
            logger.warning("the checkpoint inside step %d could not be saved", index + 1, exc_info=True)
            self.report.not_saved.append(f"inside step {index + 1}: {type(exc).__name__}: {exc}"[:500])
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(files, ignore_errors=True)
            return
        seconds = time.perf_counter() - started
        self.report.saved.append(CheckpointSaved(step=index + 1, seconds=seconds, size_bytes=size, within_step=progress))
        logger.info("checkpoint inside step %d (%s) saved: %.2f MB in %.1f s", index + 1, progress_text(progress),
                    size / 1e6, seconds)
        self.announce({"event": "checkpoint", "step": index + 1, "path": str(folder), "within_step": progress})


def run_recipe_steps(
    steps: tuple[TechniqueConfig, ...], settings: CheckpointSettings | None, state: ModelState,
    environment: StepEnvironment, step_probe: StepProbe, gpu_peak: GpuMemoryPeak, meter: EnergyMeter,
    original_dir: Path, reference_dir: Path,
    on_step_progress: Callable[[int, str, float], None],
) -> tuple[ModelState, list[StepReport], CheckpointsReport | None]:
    """apply_steps, resuming from `settings.resume_dir` when it holds a usable checkpoint (else every step
    runs, and the report says why) and saving to `settings.save_dir` after each step. `original_dir`: the
    uploaded model's folder; `reference_dir`: where a restored finetune reference's outputs go."""
    if settings is None:
        state, reports = apply_steps(steps, state, environment, step_probe, gpu_peak, meter.stage, on_step_progress,
                                     book_energy=meter.add_stage)
        return state, reports, None
    report = CheckpointsReport(attempt=settings.attempt, energy=ENERGY_NOTE)
    done: list[StepReport] = []
    in_step: InStep | None = None
    if settings.resume_dir is not None:
        try:
            restored = _restore(settings, steps, environment, original_dir, reference_dir)
        except CheckpointError as exc:
            logger.warning("not resuming: %s; running every step", exc)
            report.problem = str(exc)
        else:
            if restored.state is not None:
                state = restored.state  # the original's torch model, no longer referenced, is freed
            in_step = restored.in_step
            done = [
                entry if entry.resumed_from_attempt is not None
                else entry.model_copy(update={"resumed_from_attempt": restored.attempt})
                for entry in restored.step_reports
            ]
            meter.carry(carried_stages(restored.energy_stages, restored.attempt))
            if restored.task_reference is not None:
                # Later steps train on the classes of the model the finetune step made.
                reference = restored.task_reference
                step_probe.restore(reference)
                environment = replace(environment, calibration_labels=encode_labels(
                    environment.calibration_label_names, reference.label2id, reference.num_labels
                ).tolist())
            report.resumed_from_attempt = restored.attempt
            report.resumed_steps = list(range(1, restored.steps_done + 1))
            if in_step is not None:
                report.resumed_within_step = {"step": in_step.step, **in_step.progress}
                logger.info("resuming inside step %d (%s) from attempt %d's checkpoint", in_step.step,
                            progress_text(in_step.progress), restored.attempt)
            else:
                logger.info("resumed after step %d from attempt %d's checkpoint", restored.steps_done, restored.attempt)
    saver = None if settings.save_dir is None else _Saver(
        settings, original_dir, meter, step_probe, environment.announce, report
    )

    def within_step_for(index: int, technique: str, reports: list[StepReport]) -> WithinStep:
        return WithinStep(
            interval_s=settings.within_step_interval_s,
            resume=in_step if in_step is not None and in_step.step == index + 1 else None,
            save=None if saver is None else functools.partial(saver.within, index, technique, reports),
        )

    state, reports = apply_steps(
        steps, state, environment, step_probe, gpu_peak, meter.stage, on_step_progress, done=done,
        on_step_done=saver or (lambda index, state, reports: None), book_energy=meter.add_stage,
        within_step_for=within_step_for,
    )
    return state, reports, report
