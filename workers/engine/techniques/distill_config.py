"""The `distill` technique's params (the handler is workers.engine.techniques.distill): kept apart
so that the API validates recipes without importing torch."""

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from workers.engine.registry import TechniqueConfig
from workers.engine.training.settings import TrainingParams


class DistillConfig(TechniqueConfig, TrainingParams):
    technique: ClassVar[str] = "distill"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Knowledge distillation: trains a smaller student (the teacher with fewer layers, a narrower FFN, or "
        "an uploaded model) to reproduce the teacher on the job's texts, optionally enlarged by augmentation. "
        "Classifiers also learn from the dataset's labels; encoders match pooled embeddings and hidden "
        "states; causal LMs match token distributions."
    )
    requires_data: ClassVar[bool] = True

    student_layers: int | list[int] | None = Field(
        None,
        description="Teacher layers the student keeps, initialised from them (as DistilBERT did): a list of "
        "0-based layer indices, or a count, picked by removing, one at a time, the layer whose removal "
        "changes the teacher's outputs on the job's texts least.",
    )
    student_width: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Fraction of the FFN neurons each layer keeps (the most active ones on the job's texts); "
        "the hidden size stays, so outputs remain comparable.",
    )
    student_model_id: str | None = Field(
        None,
        min_length=1,
        description="An uploaded model to train as the student; it must use the teacher's tokenizer "
        "vocabulary (and, for encoders, its hidden size).",
    )

    student_depth: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Like student_layers given as a count, but as a fraction of the teacher's layers (rounded, at "
        "least 1), so one recipe halves any depth: 0.5 keeps 3 of 6 layers, 6 of 12.",
    )

    def referenced_models(self) -> dict[str, str]:
        return {"student_model_id": self.student_model_id} if self.student_model_id is not None else {}

    @field_validator("student_layers")
    @classmethod
    def _layers_make_sense(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("student_layers must keep at least 1 layer")
        if isinstance(value, list):
            if not value:
                raise ValueError("student_layers must list at least one layer index")
            if any(index < 0 for index in value):
                raise ValueError("student_layers indices are 0-based and cannot be negative")
            if any(later <= earlier for earlier, later in zip(value, value[1:])):
                raise ValueError("student_layers indices must be increasing and distinct, e.g. [0, 2, 4]")
        return value

    @model_validator(mode="after")
    def _exactly_one_student(self) -> "DistillConfig":
        given = [self.student_layers, self.student_depth, self.student_width, self.student_model_id]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of student_layers, student_depth, student_width or student_model_id")
        return self
