"""Recovery fine-tuning as a technique calls it after damaging a model (pruning, factorising):
the damaged model learns to reproduce the undamaged one on the job's texts, with the distillation
loss of `workers.engine.training.loop`, and the step's report gets the figures."""

import dataclasses
import logging

import torch

from workers.engine.devices import module_device
from workers.engine.state import ModelState, StepContext
from workers.engine.training.loop import recover
from workers.engine.training.settings import RecoverySettings

logger = logging.getLogger(__name__)


def recover_step(
    damaged: torch.nn.Module,
    teacher: torch.nn.Module,
    settings: RecoverySettings,
    state: ModelState,
    context: StepContext,
    masks: dict[str, torch.Tensor] | None = None,
    progress_span: tuple[float, float] = (0.5, 1.0),
) -> None:
    """Trains `damaged` in place; `masks` keep pruned weights at zero."""
    start, end = progress_span
    stats = recover(
        damaged, teacher, state.task, context.calibration_texts, context.calibration_labels, context.tokenizer,
        settings, context.sequence_length, on_progress=lambda fraction: context.on_progress(
            start + (end - start) * fraction), masks=masks,
    )
    damaged.eval()
    context.details["recovery"] = {key: value for key, value in dataclasses.asdict(stats).items()
                                   if key != "selection" or value is not None}
    context.placement["recovery"] = str(module_device(damaged))
    logger.info(
        "recovery: %d steps over %d examples (%d texts) in %.0f s, loss %.4g -> %.4g",
        stats.steps, stats.examples_used, stats.original_examples, stats.seconds, stats.initial_loss, stats.final_loss,
    )
