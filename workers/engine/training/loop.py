"""The training loop that distills a student from a teacher, and `recover`, the entry point other
techniques call to fine-tune a model they damaged (pruned, factorised, clustered) against the original."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from workers.engine.architectures.tasks import Task
from workers.engine.errors import EngineUserError
from workers.engine.students import layer_count
from workers.engine.training.data import Example, augment, batch_indices, collate, tokenise
from workers.engine.training.losses import UNLABELLED, causal_lm_loss, classifier_loss, encoder_loss
from workers.engine.training.selection import SelectionLog, active_choice, random_choice, score_pool
from workers.engine.training.settings import TrainingParams

logger = logging.getLogger(__name__)

# Teacher outputs are computed once and reused every epoch when they fit in this many bytes; a
# causal LM's logits (vocab floats per token) rarely do, an encoder's hidden states usually do.
TEACHER_CACHE_BYTES = 512 * 2**20
# The loss reported before and after training is measured on at most this many original texts.
LOSS_PROBE_EXAMPLES = 256
WARMUP_FRACTION = 0.06
MAX_GRAD_NORM = 1.0
_TARGET_BATCH = 64


@dataclass(frozen=True)
class RecoveryStats:
    examples_used: int  # after augmentation
    original_examples: int
    steps: int
    epochs: float
    initial_loss: float  # on the original texts, before the first step
    final_loss: float  # on the same texts, after the last step
    seconds: float
    selection: dict | None = None  # selection random or active: how the texts were chosen (SelectionLog)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer j stands for the output of teacher layer round((j + 1)·T/S) − 1, so the last
    layers of both line up (TinyBERT's uniform mapping); the same depth maps layer to layer."""
    return [round((index + 1) * teacher_layers / student_layers) - 1 for index in range(student_layers)]


class _Targets:
    """The teacher's outputs for the transfer set, cached per example when they fit; none without a
    teacher (a classifier trained on its labels alone)."""

    def __init__(
        self, teacher, task: Task, examples: list[Example], pad_id: int, layer_map: list[int] | None,
        device: torch.device,
    ):
        self.teacher, self.task, self.examples, self.pad_id, self.layer_map = teacher, task, examples, pad_id, layer_map
        self.device = device
        self.cache: list[dict[str, torch.Tensor]] | None = None
        if teacher is not None and self._estimated_bytes() <= TEACHER_CACHE_BYTES:
            self.cache = [None] * len(examples)
            # Sorted by length, so each chunk pads little.
            order = sorted(range(len(examples)), key=lambda index: len(examples[index].ids))
            for start in range(0, len(order), _TARGET_BATCH):
                chunk = order[start:start + _TARGET_BATCH]
                outputs = self._compute(_batch(examples, chunk, pad_id, self.device))
                for row, index in enumerate(chunk):
                    length = len(examples[index].ids)
                    self.cache[index] = {
                        # clone: a view would keep the whole padded chunk alive.
                        key: (value[row] if value.dim() == 2 else value[row, :length]).clone()
                        for key, value in outputs.items()
                    }

    def _per_token_floats(self) -> int:
        config = self.teacher.config
        if self.task == "text-generation":
            return config.vocab_size
        if self.task == "feature-extraction":
            return config.hidden_size * (1 + len(self.layer_map or []))
        return 0

    def _estimated_bytes(self) -> int:
        tokens = sum(len(example.ids) for example in self.examples)
        return tokens * self._per_token_floats() * 4 + len(self.examples) * 64

    @torch.no_grad()
    def _compute(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = _forward(self.teacher, self.task, batch, hidden=bool(self.layer_map))
        if self.task != "feature-extraction":
            return {"logits": outputs.logits}
        targets = {"last": outputs.last_hidden_state}
        for position, layer in enumerate(self.layer_map or []):
            targets[f"hidden{position}"] = outputs.hidden_states[layer + 1]
        return targets

    def for_batch(self, indices: list[int], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        if self.cache is None:
            return self._compute(batch)
        width = batch["input_ids"].shape[1]
        stacked = {}
        for key in self.cache[indices[0]]:
            rows = [self.cache[index][key] for index in indices]
            if rows[0].dim() == 1:  # a classifier's logits: one row per example
                stacked[key] = torch.stack(rows)
                continue
            padded = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
            for row, value in enumerate(rows):
                padded[row, : value.shape[0]] = value
            stacked[key] = padded
        return stacked


def _batch(examples: list[Example], indices: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in collate([examples[index] for index in indices], pad_id).items()}


def _forward(model, task: Task, batch: dict[str, torch.Tensor], hidden: bool):
    kwargs = {"use_cache": False} if task == "text-generation" else {}
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=hidden, **kwargs
    )


def _loss(student, task: Task, batch, targets, settings: TrainingParams, layer_map: list[int] | None) -> torch.Tensor:
    outputs = _forward(student, task, batch, hidden=bool(layer_map))
    if task == "text-classification":
        return classifier_loss(
            outputs.logits, targets.get("logits"), batch["labels"], settings.alpha, settings.temperature
        )
    if task == "text-generation":
        return causal_lm_loss(outputs.logits, targets["logits"], batch["attention_mask"], settings.temperature)
    student_hidden = [outputs.hidden_states[index + 1] for index in range(len(layer_map or []))]
    teacher_hidden = [targets[f"hidden{position}"] for position in range(len(layer_map or []))]
    return encoder_loss(
        outputs.last_hidden_state, targets["last"], student_hidden, teacher_hidden, batch["attention_mask"],
        settings.hidden_state_weight,
    )


@torch.no_grad()
def _mean_loss(student, task, examples, count: int, targets: _Targets, pad_id, settings, layer_map) -> float:
    """The mean loss on the first `count` examples, in eval mode."""
    was_training = student.training
    student.eval()
    total = 0.0
    for start in range(0, count, _TARGET_BATCH):
        indices = list(range(start, min(start + _TARGET_BATCH, count)))
        batch = _batch(examples, indices, pad_id, targets.device)
        loss = _loss(student, task, batch, targets.for_batch(indices, batch), settings, layer_map)
        total += loss.item() * len(indices)
    student.train(was_training)
    return total / count


def zero_masks(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """0/1 masks of the named parameters' zeros, so recovery cannot regrow pruned weights."""
    parameters = dict(model.named_parameters())
    return {name: (parameters[name] != 0).to(parameters[name].dtype) for name in names}


def _check_masks(student: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict[torch.nn.Parameter, torch.Tensor]:
    parameters = dict(student.named_parameters())
    bound = {}
    for name, mask in masks.items():
        if name not in parameters:
            raise ValueError(f"mask names {name!r}, which is not a parameter of the student")
        if mask.shape != parameters[name].shape:
            raise ValueError(
                f"mask {name!r} has shape {tuple(mask.shape)}, its parameter {tuple(parameters[name].shape)}"
            )
        bound[parameters[name]] = mask.to(device=parameters[name].device, dtype=parameters[name].dtype)
    return bound


def _apply_masks(bound: dict[torch.nn.Parameter, torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, mask in bound.items():
            parameter.mul_(mask)


def recover(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    task: Task,
    texts: list[str],
    labels: list[int] | None,
    tokenizer: PreTrainedTokenizerBase,
    settings: TrainingParams,
    sequence_length: int,
    on_progress: Callable[[float], None] = lambda fraction: None,
    masks: dict[str, torch.Tensor] | None = None,
    layer_map: list[int] | None = None,
    dropout: bool = False,
    train_embeddings: bool = False,
    proximal_mu: float = 0.0,
    schedule_span: tuple[int, int] | None = None,
) -> RecoveryStats:
    """Fine-tunes `student` in place to reproduce `teacher` on `texts` (plus augmented copies).

    `masks` (parameter name -> 0/1 tensor) are re-applied after every optimizer step, so pruned
    weights stay zero. `layer_map[j]` is the teacher layer whose output student layer j is matched
    to (encoders, with hidden_state_weight > 0); by default the uniform map when hidden sizes agree.
    `dropout` keeps the student's dropout on while training; `train_embeddings` also trains the
    input token embeddings, which are otherwise frozen. A classifier may have no teacher: it then
    learns from the labels alone, and every text must have one. `proximal_mu` > 0 adds FedProx's
    proximal term, mu/2 x the squared distance of the trainable weights to where they started.
    `schedule_span` (steps taken before this call, steps in all) makes this call one stretch of a longer
    warmup-then-decay schedule: a federated round takes its part of the whole run's rate.
    """
    if teacher is None and (task != "text-classification" or labels is None or UNLABELLED in labels):
        raise ValueError("training without a teacher needs a classifier and a label for every text")
    if teacher is None and settings.selection == "active":
        raise ValueError("active selection scores texts by the teacher: give a teacher, or choose random or all")
    if not texts:
        raise EngineUserError("Training needs texts: upload a dataset or use the builtin sample.")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pool = tokenise(tokenizer, texts, labels if task == "text-classification" else None, sequence_length)
    if task == "feature-extraction" and settings.hidden_state_weight > 0:
        if layer_map is None and student.config.hidden_size == teacher.config.hidden_size:
            layer_map = uniform_layer_map(layer_count(student), layer_count(teacher))
    else:
        layer_map = None

    device = next(student.parameters()).device
    if teacher is not None:
        teacher.eval()
    bound_masks = _check_masks(student, masks or {})
    _apply_masks(bound_masks)
    log = SelectionLog(settings.selection, len(pool), settings.max_examples)
    embeddings_of_pool = None
    chosen_counts: list[int] = []

    def choose(round_number: int) -> list[Example]:
        nonlocal embeddings_of_pool
        if settings.selection == "all":
            chosen = list(range(len(pool)))
        elif settings.selection == "random":
            chosen = random_choice(len(pool), settings.max_examples, settings.seed)
        else:
            scores, embeddings_of_pool = score_pool(
                student, teacher, task, pool, pad_id, settings.temperature, embeddings_of_pool
            )
            chosen = active_choice(scores, embeddings_of_pool, settings.max_examples)
            log.mean_score_chosen.append(float(scores[chosen].mean()))
            log.mean_score_pool.append(float(scores.mean()))
        log.rounds += 1
        log.distinct_used.update(chosen)
        chosen_counts.append(len(chosen))
        return augment([pool[index] for index in chosen], tokenizer, settings.augment, settings.augment_copies,
                       settings.seed + round_number)

    examples = choose(0)
    targets = _Targets(teacher, task, examples, pad_id, layer_map, device)
    # augment() puts the originals first, so the probe is the first texts, unaltered; it stays the first
    # round's, so the losses before and after are on the same texts.
    originals = chosen_counts[0]
    probe = min(originals, LOSS_PROBE_EXAMPLES)
    probe_examples, probe_targets = examples, targets
    initial_loss = _mean_loss(student, task, probe_examples, probe, probe_targets, pad_id, settings, layer_map)

    total_steps = settings.total_steps(len(examples))
    # Active selection chooses again every rescore_steps; the other kinds train on one choice.
    phase_steps = settings.rescore_steps if settings.selection == "active" else total_steps
    input_embeddings = student.get_input_embeddings().weight
    frozen = not train_embeddings and input_embeddings.requires_grad
    # The token embeddings stay the teacher's: they are half of a small encoder's parameters (a dense
    # AdamW update of all of them every step), a small transfer set touches few of their rows, and
    # weight decay would still drift the rest away from the teacher's.
    if frozen:
        input_embeddings.requires_grad_(False)
    try:
        trainable = [parameter for parameter in student.parameters() if parameter.requires_grad]
        anchors = [parameter.detach().clone() for parameter in trainable] if proximal_mu > 0 else []
        optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.01)
        offset, schedule_steps = schedule_span or (0, total_steps)
        warmup = max(1, round(WARMUP_FRACTION * schedule_steps))
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # what the scheduler needs to start past step 0
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, schedule_steps, last_epoch=offset - 1)
        # Dropout stays off unless asked for: on MiniLM (6 -> 3 layers, 160 steps) it changed held-out
        # fidelity by 0.002 (0.625 vs 0.623), within noise, and off keeps the fit to the teacher exact.
        student.train(dropout)
        step, round_number = 0, 0
        while step < total_steps:
            if round_number > 0:
                examples = choose(round_number)
                targets = _Targets(teacher, task, examples, pad_id, layer_map, device)
            lengths = [len(example.ids) for example in examples]
            steps = min(phase_steps, total_steps - step)
            for indices in batch_indices(lengths, settings.batch_size, steps, settings.seed + round_number):
                batch = _batch(examples, indices, pad_id, targets.device)
                loss = _loss(student, task, batch, targets.for_batch(indices, batch), settings, layer_map)
                if anchors:
                    loss = loss + proximal_mu / 2 * sum(
                        (parameter - anchor).pow(2).sum() for parameter, anchor in zip(trainable, anchors)
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                _apply_masks(bound_masks)
                step += 1
                on_progress(step / total_steps)
            round_number += 1
    finally:
        student.eval()
        if frozen:
            input_embeddings.requires_grad_(True)
    final_loss = _mean_loss(student, task, probe_examples, probe, probe_targets, pad_id, settings, layer_map)
    stats = RecoveryStats(
        examples_used=len(examples),
        original_examples=originals,
        steps=total_steps,
        epochs=round(total_steps / -(-len(examples) // settings.batch_size), 3),
        initial_loss=initial_loss,
        final_loss=final_loss,
        seconds=round(time.perf_counter() - started, 3),
        selection=None if settings.selection == "all" else log.as_dict(),
    )
    logger.info(
        "trained %d steps (%.2f epochs) on %d examples (%d texts, augment %s): loss %.4f -> %.4f in %.1f s",
        stats.steps, stats.epochs, stats.examples_used, stats.original_examples, settings.augment,
        stats.initial_loss, stats.final_loss, stats.seconds,
    )
    return stats
