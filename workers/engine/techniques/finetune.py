"""The `finetune` technique: adapts an encoder or a classifier to a new classification task from the
dataset's labels, under a new head (or its own, when it already has exactly the dataset's classes),
optionally distilling from an uploaded classifier of the same classes. Part of the labelled rows is
held out, so the step reports the accuracy it started from and the accuracy it reached on rows it
never trained on.

The training itself is the shared loop (`workers.engine.training.loop.recover`) with hard labels; the
head comes from transformers' own AutoModelForSequenceClassification for the model's config, with the
model's encoder moved in (so pruned or distilled encoders keep their shapes).
"""

import copy
import logging
import random

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from workers.engine.config_folder import derive_config_dir
from workers.engine.devices import module_device
from workers.engine.errors import EngineUserError
from workers.engine.loading import load_model, load_tokenizer
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.finetune_config import FinetuneConfig
from workers.engine.training.data import collate, tokenise
from workers.engine.training.loop import recover
from workers.engine.training.losses import UNLABELLED

logger = logging.getLogger(__name__)

_EVAL_BATCH = 64


def _classes(config: FinetuneConfig, names: list[str | None]) -> list[str]:
    """The head's classes in output order, after checking that every labelled row uses one of them."""
    present = sorted({name for name in names if name is not None})
    if len(present) < 2:
        raise EngineUserError(
            f"finetune needs labelled rows of at least 2 classes; the dataset has {len(present)} "
            f"({', '.join(present) or 'no labels'}). Label more rows, or upload a dataset with a label column."
        )
    if config.labels is None:
        return present
    unknown = sorted(set(present) - set(config.labels))
    if unknown:
        raise EngineUserError(
            f"Rows are labelled {', '.join(map(repr, unknown[:10]))}, which params.labels does not list "
            f"({', '.join(map(repr, config.labels))}); add them to labels, or fix those rows."
        )
    return list(config.labels)


def _label_names(model: torch.nn.Module) -> list[str]:
    return [str(model.config.id2label[index]) for index in range(model.config.num_labels)]


def _classifier_for(
    model: torch.nn.Module, task: str, classes: list[str], seed: int
) -> tuple[torch.nn.Module, list[str], str]:
    """(classifier, its classes in output order, "kept" | "replaced" | "added"): the model itself when
    it already classifies into exactly these classes, else its encoder under a new, untrained head."""
    if task == "text-classification" and set(_label_names(model)) == set(classes):
        return model, _label_names(model), "kept"
    encoder = model.base_model
    config = copy.deepcopy(encoder.config)
    config.num_labels = len(classes)
    config.id2label = dict(enumerate(classes))
    config.label2id = {name: index for index, name in enumerate(classes)}
    config.problem_type = "single_label_classification"
    try:
        # The new head's initialisation follows the step's seed, whatever ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            classifier = AutoModelForSequenceClassification.from_config(config)
    except ValueError as exc:
        raise EngineUserError(
            f"transformers has no sequence-classification head for model type {config.model_type!r}: {exc}"
        ) from exc
    config.architectures = [type(classifier).__name__]
    # The encoder keeps its trained weights and its shapes (pruned layers included); only the head is new.
    setattr(classifier, classifier.base_model_prefix, encoder)
    classifier.to(module_device(encoder))
    return classifier.eval(), classes, "replaced" if task == "text-classification" else "added"


class _ClassOrder(torch.nn.Module):
    """A teacher whose logits are reordered to the student's classes (the same names, another order)."""

    def __init__(self, model: torch.nn.Module, order: list[int]):
        super().__init__()
        self.model, self.config = model, model.config
        self.register_buffer("order", torch.tensor(order, device=module_device(model)), persistent=False)

    def forward(self, **kwargs):
        outputs = self.model(**kwargs)
        outputs["logits"] = outputs.logits[:, self.order]
        return outputs


def _teacher(config: FinetuneConfig, context: StepContext, classes: list[str], device: torch.device):
    if config.teacher_model_id is None:
        return None
    folder = context.uploaded_model("teacher_model_id", config.teacher_model_id, "teacher")
    if load_tokenizer(folder).get_vocab() != context.tokenizer.get_vocab():
        raise EngineUserError(
            "The teacher's tokenizer vocabulary differs from the model's, so the two cannot read the same token ids; "
            "use a teacher trained with this model's tokenizer."
        )
    try:
        teacher = load_model(folder, "text-classification", str(device))
    except (OSError, ValueError) as exc:
        raise EngineUserError(f"The teacher does not load as a text-classification model: {exc}") from exc
    names = _label_names(teacher)
    if set(names) != set(classes):
        raise EngineUserError(
            f"The teacher classifies into {', '.join(map(repr, names))}; this finetune's classes are "
            f"{', '.join(map(repr, classes))}. Distillation needs the same classes (by name)."
        )
    if names == classes:
        return teacher
    return _ClassOrder(teacher, [names.index(name) for name in classes])


@torch.no_grad()
def _accuracy(
    model: torch.nn.Module, texts: list[str], label_ids: list[int], tokenizer: PreTrainedTokenizerBase,
    sequence_length: int,
) -> float | None:
    if not texts:
        return None
    examples = tokenise(tokenizer, texts, label_ids, sequence_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = module_device(model)
    correct = 0
    for start in range(0, len(examples), _EVAL_BATCH):
        batch = collate(examples[start:start + _EVAL_BATCH], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        correct += int((logits.argmax(-1).cpu() == batch["labels"]).sum())
    return round(correct / len(examples), 4)


def _split(names: list[str | None], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, held-out rows): a seeded share of the labelled rows is held out."""
    labelled = [row for row, name in enumerate(names) if name is not None]
    random.Random(seed).shuffle(labelled)
    held = sorted(labelled[: round(len(labelled) * fraction)])
    held_set = set(held)
    return [row for row in range(len(names)) if row not in held_set], held


def apply_finetune(config: FinetuneConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("finetune needs a torch model.")
    if state.task not in ("feature-extraction", "text-classification"):
        raise EngineUserError(
            f"finetune trains encoders and classifiers for a classification task; this model's task is {state.task}."
        )
    names = context.calibration_label_names
    if names is None:
        raise EngineUserError("finetune trains on labels: use a dataset with a label column.")
    classes = _classes(config, names)
    device = module_device(state.torch_model)
    teacher = _teacher(config, context, classes, device)
    student, classes, head = _classifier_for(state.torch_model, state.task, classes, config.seed)
    class_id = {name: index for index, name in enumerate(classes)}
    label_ids = [UNLABELLED if name is None else class_id[name] for name in names]
    train_rows, held_rows = _split(names, config.heldout_fraction, config.seed)
    # Without a teacher only labelled rows teach anything; with one, unlabelled rows learn from its outputs.
    if teacher is None:
        train_rows = [row for row in train_rows if label_ids[row] != UNLABELLED]
    if not train_rows:
        raise EngineUserError("No labelled row is left to train on after holding some out; lower heldout_fraction.")
    texts = context.calibration_texts
    held_texts, held_ids = [texts[row] for row in held_rows], [label_ids[row] for row in held_rows]

    def accuracy(model: torch.nn.Module) -> float | None:
        return _accuracy(model, held_texts, held_ids, context.tokenizer, context.sequence_length)

    before = accuracy(student)
    copies = config.augment_copies if config.augment != "none" else 0
    settings = config.training_settings(len(train_rows) * (1 + copies))
    stats = recover(
        student, teacher, "text-classification", [texts[row] for row in train_rows],
        [label_ids[row] for row in train_rows], context.tokenizer, settings, context.sequence_length,
        context.on_progress,
    )
    after = accuracy(student)
    context.placement["training"] = str(module_device(student))
    context.details.update({
        "head": head,
        "classes": classes,
        "labelled_rows": sum(label != UNLABELLED for label in label_ids),
        "training_rows": len(train_rows),
        "training_rows_labelled": sum(label_ids[row] != UNLABELLED for row in train_rows),
        "heldout_rows": len(held_rows),
        "heldout_accuracy_before": before,
        "heldout_accuracy_after": after,
        "teacher_model_id": config.teacher_model_id,
        "teacher_heldout_accuracy": None if teacher is None else accuracy(teacher),
        "examples_used": stats.examples_used,
        "steps": stats.steps,
        "epochs": stats.epochs,
        "initial_loss": round(stats.initial_loss, 6),
        "final_loss": round(stats.final_loss, 6),
        "training_seconds": stats.seconds,
    } | ({"selection": stats.selection} if stats.selection else {}))
    logger.info(
        "finetune: head %s, %d classes, %d training rows; held-out accuracy %s -> %s",
        head, len(classes), len(train_rows), before, after,
    )
    config_dir = derive_config_dir(student, state.config_dir, context.work_dir / "classifier")
    return ModelState(task="text-classification", config_dir=config_dir, torch_model=student)
