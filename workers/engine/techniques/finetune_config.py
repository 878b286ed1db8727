"""The `finetune` technique's params (the handler is workers.engine.techniques.finetune): kept apart
so that the API validates recipes without importing torch."""

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from workers.engine.registry import TechniqueConfig
from workers.engine.training.settings import AugmentKind, TrainingParams

# A pretrained encoder under a new head learns at the rates that fine-tuned the benchmark's classifier
# (benchmarks/docs_topics.py: lr 5e-5, 3 epochs, no augmentation, 0.837 held-out accuracy on 6 topics).
FINETUNE_LR = 5e-5
FINETUNE_EPOCHS = 3
# ...but 3 epochs of a few labelled rows are too few steps for a new head: on 189 labelled docstring
# sentences, 36 steps reached 0.604 held-out accuracy and 300 steps 0.740 (benchmarks/results/label_bench*.md).
FINETUNE_MIN_STEPS = 300


class FinetuneConfig(TechniqueConfig, TrainingParams):
    technique: ClassVar[str] = "finetune"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Transfer learning to a new classification task: trains an encoder or a classifier (an uploaded model, or "
        "the output of earlier steps) on the dataset's labels, under a new head for the dataset's classes, or under "
        "its own head when it already has exactly those classes. With teacher_model_id, it also learns from an "
        "uploaded classifier of the same classes (distillation). Part of the labelled rows is held out to report "
        "accuracy before and after; the result is a classifier that later steps compress."
    )
    requires_data: ClassVar[bool] = True
    output_task: ClassVar[str | None] = "text-classification"

    labels: list[str] | None = Field(
        None,
        min_length=2,
        description="The classes, in the order of the new head's outputs. Empty: the dataset's distinct labels, "
        "sorted. Every labelled row must use one of them.",
    )
    teacher_model_id: str | None = Field(
        None,
        min_length=1,
        description="An uploaded classifier of the same classes (by name) and tokenizer to distil from: the loss "
        "is alpha x cross-entropy on the labels plus (1 - alpha) x the KL to the teacher. Empty: labels alone.",
    )
    heldout_fraction: float = Field(
        0.2,
        ge=0,
        le=0.5,
        description="Share of the labelled rows kept out of training to measure accuracy before and after "
        "(chosen with seed). 0 trains on every labelled row, and the step then reports no held-out accuracy.",
    )
    lr: float = Field(FINETUNE_LR, gt=0, le=1, description="Peak learning rate of AdamW (warmup, then linear decay).")
    epochs: int | None = Field(
        None, ge=1, le=100,
        description=f"Passes over the labelled training rows. Give this or max_steps; both empty: {FINETUNE_EPOCHS} "
        f"epochs, or {FINETUNE_MIN_STEPS} steps if that is more (few labelled rows).",
    )
    augment: AugmentKind = Field(
        "none",
        description="Altered copies of each labelled text, with its label (see distill). Off by default: labels, "
        "not copies, carry what a classifier learns here.",
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="With teacher_model_id: weight of the cross-entropy on the labels; 1 - alpha weighs the KL "
        "to the teacher. Without a teacher the loss is the cross-entropy alone.",
    )

    def referenced_models(self) -> dict[str, str]:
        return {"teacher_model_id": self.teacher_model_id} if self.teacher_model_id is not None else {}

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if any(not label.strip() for label in value):
                raise ValueError("labels cannot be empty strings")
            if len(set(value)) != len(value):
                raise ValueError("labels must be distinct")
        return value

    @model_validator(mode="after")
    def _teacher_for_active(self) -> "FinetuneConfig":
        if self.selection == "active" and self.teacher_model_id is None:
            raise ValueError(
                "selection active scores texts by the teacher's disagreement with the student: give "
                "teacher_model_id, or use selection random or all"
            )
        return self

    def training_settings(self, num_examples: int) -> "FinetuneConfig":
        """These params with the training length made explicit: as given, or by default FINETUNE_EPOCHS
        epochs over `num_examples`, and at least FINETUNE_MIN_STEPS steps."""
        if self.epochs is not None or self.max_steps is not None:
            return self
        steps = max(FINETUNE_EPOCHS * -(-num_examples // self.batch_size), FINETUNE_MIN_STEPS)
        return self.model_copy(update={"max_steps": steps})
