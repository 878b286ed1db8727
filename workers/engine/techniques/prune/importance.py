"""Data-aware importance statistics for pruning, gathered on the calibration texts: input-activation
norms (Wanda, per-neuron and per-head output norms) and first-order Taylor scores.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from workers.engine.architectures.task_io import FORWARD_KWARGS_BY_TASK, OUTPUT_BY_TASK
from workers.engine.architectures.tasks import Task
from workers.engine.errors import EngineUserError
from workers.engine.loading import model_input_names
from workers.engine.pruned_model import in_features
from workers.engine.state import StepContext

BATCH_SIZE = 16
# Fixed, so a recipe replayed on the same data picks the same weights.
PROJECTION_SEED = 0


@dataclass
class Calibration:
    """Tokenised calibration batches; `mask` is the attention mask of the batch being run, which
    hooks read to leave padding out of every statistic."""

    batches: list[dict[str, torch.Tensor]]
    mask: torch.Tensor | None = None


def calibration_batches(model: torch.nn.Module, context: StepContext, limit: int) -> Calibration:
    texts = context.calibration_texts[:limit]
    if not texts:
        raise EngineUserError(
            "Data-aware importance needs calibration texts, and this step received none; upload a dataset "
            "or use importance 'magnitude'."
        )
    names = model_input_names(model, context.tokenizer)
    batches = []
    for start in range(0, len(texts), BATCH_SIZE):
        encoded = context.tokenizer(
            texts[start : start + BATCH_SIZE], padding=True, truncation=True,
            max_length=context.sequence_length, return_tensors="pt",
        )
        batches.append({name: encoded[name].to(context.device) for name in names})
    return Calibration(batches=batches)


def run_model(model: torch.nn.Module, task: Task, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tensor the task is judged on (embeddings or logits)."""
    return getattr(model(**batch, **FORWARD_KWARGS_BY_TASK[task]), OUTPUT_BY_TASK[task])


def _token_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The (tokens, features) rows of a (batch, sequence, features) input, padding removed."""
    if mask is None or x.dim() != 3:
        return x.reshape(-1, x.shape[-1])
    return x[mask.bool()]


@contextmanager
def _input_hooks(
    modules: dict[str, torch.nn.Module], calibration: Calibration, observe: Callable[[str, torch.Tensor], None]
) -> Iterator[None]:
    def hook_for(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            observe(name, _token_rows(args[0].detach(), calibration.mask))

        return hook

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def observe_inputs(
    model: torch.nn.Module,
    task: Task,
    modules: dict[str, torch.nn.Module],
    calibration: Calibration,
    observe: Callable[[str, torch.Tensor], None],
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> None:
    """Runs the calibration batches and hands each module's unpadded input rows to `observe`."""
    with torch.inference_mode(), _input_hooks(modules, calibration, observe):
        for index, batch in enumerate(calibration.batches):
            calibration.mask = batch.get("attention_mask")
            run_model(model, task, batch)
            on_progress((index + 1) / len(calibration.batches))
    calibration.mask = None


def input_feature_norms(
    model: torch.nn.Module, task: Task, modules: dict[str, torch.nn.Module], calibration: Calibration,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> dict[str, torch.Tensor]:
    """||X_j||_2 of every input feature j over all calibration tokens (Wanda's activation term)."""
    squares: dict[str, torch.Tensor] = {}

    def observe(name: str, rows: torch.Tensor) -> None:
        total = rows.float().pow(2).sum(0)
        squares[name] = squares[name] + total if name in squares else total

    observe_inputs(model, task, modules, calibration, observe, on_progress)
    return {name: total.sqrt() for name, total in squares.items()}


def _projection_loss(output: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """<f(x), r> with r ~ N(0, I) drawn afresh per token.

    Why this loss: the natural target, the distance to the unpruned model's outputs, is zero with zero
    gradient before pruning. With independent Gaussian r, E_r[(dL/dθ · δ)^2] = ||J δ||^2, so squared
    first-order Taylor terms of this loss estimate how much removing δ moves the outputs: an
    unbiased, task-free sensitivity that works for embeddings, logits and LM heads alike.
    """
    r = torch.randn(output.shape, generator=generator, dtype=output.dtype).to(output.device)
    if mask is not None and output.dim() == 3:
        r = r * mask[..., None].to(output.dtype)
    return (output * r).sum()


def taylor_weight_scores(
    model: torch.nn.Module, task: Task, weights: dict[str, torch.nn.Parameter], calibration: Calibration,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> dict[str, torch.Tensor]:
    """Sum over batches of (W * dL/dW)^2: the estimated squared output change from zeroing each weight."""
    scores = {name: torch.zeros_like(parameter, dtype=torch.float32) for name, parameter in weights.items()}
    with _gradients_for(model, list(weights.values())):
        for index, grads in enumerate(_projection_gradients(model, task, calibration, list(weights.values()))):
            for (name, parameter), grad in zip(weights.items(), grads, strict=True):
                scores[name] += (parameter.detach() * grad).float().pow(2)
            on_progress((index + 1) / len(calibration.batches))
    return scores


def taylor_group_scores(
    model: torch.nn.Module, task: Task, modules: dict[str, tuple[torch.nn.Module, int]], calibration: Calibration,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> dict[str, torch.Tensor]:
    """Per-group mask gradients (Michel et al. 2019): each module's input is split into groups of
    `width` features (one attention head, or one neuron with width 1) and multiplied by a mask of
    ones; the score of a group is the sum over batches of (dL/dmask)^2, the estimated squared output
    change from removing it."""
    masks = {
        name: torch.ones(in_features(module) // width, device=module.weight.device, requires_grad=True)
        for name, (module, width) in modules.items()
    }

    def hook_for(name: str, width: int):
        def hook(module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0] * masks[name].repeat_interleave(width).to(args[0].dtype), *args[1:])

        return hook

    handles = [module.register_forward_pre_hook(hook_for(name, width)) for name, (module, width) in modules.items()]
    scores = {name: torch.zeros_like(mask) for name, mask in masks.items()}
    try:
        with _gradients_for(model, []):
            for index, grads in enumerate(_projection_gradients(model, task, calibration, list(masks.values()))):
                for name, grad in zip(masks, grads, strict=True):
                    scores[name] += grad.detach().pow(2)
                on_progress((index + 1) / len(calibration.batches))
    finally:
        for handle in handles:
            handle.remove()
    return scores


@contextmanager
def _gradients_for(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> Iterator[None]:
    """Autograd on, for `parameters` only (no gradient memory for the rest); flags restored after."""
    flags = {parameter: parameter.requires_grad for parameter in model.parameters()}
    for parameter in flags:
        parameter.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)


def _projection_gradients(
    model: torch.nn.Module, task: Task, calibration: Calibration, inputs: list[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Per batch, the gradients of the random-projection loss with respect to `inputs`."""
    generator = torch.Generator().manual_seed(PROJECTION_SEED)
    for batch in calibration.batches:
        output = run_model(model, task, batch)
        yield torch.autograd.grad(_projection_loss(output, batch.get("attention_mask"), generator), inputs)
