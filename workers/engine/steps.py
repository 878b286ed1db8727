"""Applies a recipe's steps to a model state, one after another, and describes each in a step report:
its time, peak GPU memory, size and parameters before and after, and its fidelity on the probe rows.
The pipeline runs the job's recipe through it, and a goal's search runs every candidate's recipe.
"""

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import PreTrainedTokenizerBase

from workers.engine.checkpoints.within_step import WithinStep
from workers.engine.devices import GpuMemoryPeak
from workers.engine.energy.schema import StageEnergy
from workers.engine.evaluation.quality import encode_labels
from workers.engine.federated.config import FederationSettings
from workers.engine.evaluation.step_probe import StepProbe
from workers.engine.registry import TechniqueConfig, get_technique
from workers.engine.report import StepFidelityReport, StepReport
from workers.engine.reuse import ReuseCache
from workers.engine.stages import step_stage
from workers.engine.state import ModelState, StepContext
from workers.engine.target import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepEnvironment:
    """What every step of one run gets besides its params: the StepContext fields that do not change."""

    work_dir: Path  # each step gets its own folder below it
    device: Literal["cpu", "cuda"]
    target: Target
    max_batch: int
    tokenizer: PreTrainedTokenizerBase
    sequence_length: int
    calibration_texts: list[str]
    calibration_labels: list[int] | None
    calibration_label_names: list[str | None] | None = None
    model_paths: dict[str, Path] = field(default_factory=dict)
    llm_python: Path | None = None
    federation: FederationSettings | None = None
    announce: Callable[[dict], None] = lambda event: None
    # A goal search's cache of what the untouched original yields; only the first step sees that model.
    first_step_reuse: ReuseCache | None = None
    upload_dir: Path | None = None  # the folder the run's original model was loaded from


def apply_steps(
    steps: tuple[TechniqueConfig, ...] | list[TechniqueConfig],
    state: ModelState,
    environment: StepEnvironment,
    step_probe: StepProbe,
    gpu_peak: GpuMemoryPeak,
    stage_scope: Callable[[str], AbstractContextManager],
    on_progress: Callable[[int, str, float], None] = lambda index, stage, fraction: None,
    done: list[StepReport] | None = None,
    on_step_done: Callable[[int, ModelState, list[StepReport]], None] = lambda index, state, reports: None,
    book_energy: Callable[[StageEnergy], None] = lambda stage: None,
    within_step_for: Callable[[int, str, list[StepReport]], WithinStep | None] = lambda index, technique, reports: None,
) -> tuple[ModelState, list[StepReport]]:
    """`stage_scope(stage)` wraps each step (the energy meter's stage, or nothing when the caller books
    the whole run as one); `on_progress(index, stage, fraction)` follows each step from 0 to 1.

    `done`: the reports of the first steps, already in `state` (a resumed job's checkpoint); the rest run.
    `on_step_done(index, state, reports)` follows each step that ran, with every report so far.
    `book_energy` gets the energy a step's sites used (the energy meter's add_stage), named after the step.
    `within_step_for(index, technique, reports)`: the step's checkpoints inside itself, if any."""
    reports = list(done or [])
    calibration_labels = environment.calibration_labels
    # Each step's "after" is the next one's "before": an ONNX state's count reads the whole file.
    size_before, parameters_before = state.size_bytes(), state.num_parameters()
    for index, step in enumerate(steps):
        if index < len(reports):
            continue
        stage = step_stage(index, step.technique)
        on_progress(index, stage, 0.0)
        context = StepContext(
            work_dir=environment.work_dir / "steps" / f"{index + 1:02d}-{step.technique}",
            device=environment.device,
            target=environment.target,
            max_batch=environment.max_batch,
            tokenizer=environment.tokenizer,
            sequence_length=environment.sequence_length,
            # Already in memory, so every step gets them; requires_data tells users which steps use them.
            calibration_texts=environment.calibration_texts,
            calibration_labels=calibration_labels,
            calibration_label_names=environment.calibration_label_names,
            on_progress=lambda fraction, index=index, stage=stage: on_progress(index, stage, fraction * 0.9),
            model_paths=dict(environment.model_paths),
            llm_python=environment.llm_python,
            federation=environment.federation,
            announce=environment.announce,
            reuse=environment.first_step_reuse if index == 0 else None,
            upload_dir=environment.upload_dir if index == 0 else None,
            within_step=within_step_for(index, step.technique, reports),
        )
        context.work_dir.mkdir(parents=True, exist_ok=True)
        logger.info("step %d/%d: %s %s", index + 1, len(steps), step.technique, step.model_dump_json())
        started = time.perf_counter()
        gpu_peak.start_segment()
        task_before = state.task
        with stage_scope(stage):
            state = get_technique(step.technique).handler(step, state, context)
        wall_time_s = time.perf_counter() - started
        peak_gpu_memory_mb = gpu_peak.segment_mb()
        for site_stage in context.site_energy:
            book_energy(site_stage.model_copy(update={"stage": f"{stage}.site_{site_stage.site}"}))
        if state.task != task_before:
            # A step that trained for a new task (finetune) is what later steps are compared with, and
            # the labels they train on are its classes.
            step_probe.rebase(state, environment.tokenizer, environment.device, f"step {index + 1} ({step.technique})")
            config = state.torch_model.config
            calibration_labels = encode_labels(
                environment.calibration_label_names, config.label2id, config.num_labels
            ).tolist()
            fidelity = None  # the new task's outputs have nothing to be compared with before this step
        else:
            # Measured outside the step's time: it is the report's cost, not the technique's.
            fidelity = step_probe.measure(state, environment.tokenizer, environment.device)
        size_after, parameters_after = state.size_bytes(), state.num_parameters()
        reports.append(
            StepReport(
                technique=step.technique,
                version=step.version,
                params=step.model_dump(mode="json"),
                wall_time_s=wall_time_s,
                format_after=state.format,
                size_bytes_before=size_before,
                size_bytes_after=size_after,
                parameters_before=parameters_before,
                parameters_after=parameters_after,
                fidelity_after=None if fidelity is None else StepFidelityReport(
                    metrics=fidelity.metrics, primary_metric=fidelity.primary_metric, num_samples=fidelity.num_samples
                ),
                details=context.details,
                peak_gpu_memory_mb=peak_gpu_memory_mb,
                placement=context.placement,
            )
        )
        logger.info(
            "step %d/%d done in %.1f s: %.2f MB (%s)%s", index + 1, len(steps), wall_time_s,
            reports[-1].size_bytes_after / 1e6, state.format, "" if fidelity is None else
            f", {fidelity.primary_metric} {fidelity.metrics[fidelity.primary_metric]:.4f} on {fidelity.num_samples} rows",
        )
        on_step_done(index, state, reports)
        on_progress(index, stage, 1.0)
        size_before, parameters_before = size_after, parameters_after
    return state, reports
