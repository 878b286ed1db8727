"""A job's goal: the constraints its result must meet, what to optimise among the results that meet
them, and the budget of the search. Kept free of torch, so the API validates goals without it.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Objective = Literal["smallest", "fastest", "most_faithful", "least_energy"]
# The candidate families a search may try; `families` in a goal narrows them.
Family = Literal[
    "half", "int8", "int8_static", "int4", "cluster", "qat", "prune_cluster", "distill_int8", "low_rank_int8",
]
FAMILIES: tuple[Family, ...] = (
    "half", "int8", "int8_static", "int4", "cluster", "qat", "prune_cluster", "distill_int8", "low_rank_int8",
)
FAMILY_DESCRIPTIONS: dict[Family, str] = {
    "half": "fp16 storage (bf16 for a torch target): half the bytes, outputs nearly unchanged",
    "int8": "int8 weights and dynamic int8 activations, with or without the fidelity fallback, smoothing, "
    "outlier channels apart and Huffman coding",
    "int8_static": "int8 weights and activations calibrated on the search rows",
    "int4": "4-bit weights in groups (MatMulNBits; torchao's int4 on a cuda torch target)",
    "cluster": "weight sharing at 3 to 6 bits with error compensation, then Huffman coding",
    "qat": "int8_static or 4-bit weights with quantization-aware training against the original, where their "
    "post-training form falls a little short of the quality floor (trains)",
    "prune_cluster": "FFN neurons pruned and recovered by distillation, then weight sharing and Huffman (trains)",
    "distill_int8": "a student with fewer layers distilled from the original, then int8 (trains)",
    "low_rank_int8": "truncated SVD of every layer, recovered by distillation, then int8 (trains)",
}
TRAINING_FAMILIES: frozenset[Family] = frozenset({"qat", "prune_cluster", "distill_int8", "low_rank_int8"})
CONSTRAINTS = ("min_fidelity", "max_accuracy_drop", "max_size_ratio", "max_size_bytes", "max_latency_ms")


class Goal(BaseModel):
    """Constraints, an objective and a budget; the job searches for the result instead of taking a recipe."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False,
        json_schema_extra={"examples": [{"min_fidelity": 0.99, "objective": "smallest", "budget_minutes": 30}]},
    )

    min_fidelity: float | None = Field(
        None, gt=0, le=1,
        description="The result's outputs must stay this close to the original's: the mean cosine of the embeddings "
        "(encoders) or the top-1 agreement (classifiers), on the search rows and then on held-out rows.",
    )
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1,
        description="Classifiers with a labelled dataset: the most accuracy the result may lose against the labels, "
        "absolute (0.01 = one point) or relative to the original's accuracy (see drop_is).",
    )
    drop_is: Literal["absolute", "relative"] = Field(
        "absolute", description="How max_accuracy_drop is meant: accuracy points, or a fraction of the original's."
    )
    max_size_ratio: float | None = Field(
        None, gt=0, le=1, description="The result's model file at most this fraction of the original's weights."
    )
    max_size_bytes: int | None = Field(None, gt=0, description="The result's model file at most this many bytes.")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Median latency at latency_batch_size on the job's target, at most this."
    )
    latency_batch_size: int = Field(
        1, ge=1, le=1024, description="The batch size max_latency_ms and the objective fastest are measured at."
    )
    objective: Objective = Field(
        "smallest",
        description="Among the candidates that meet every constraint: smallest file, fastest at latency_batch_size, "
        "most faithful outputs, or least energy (with deployment.requests_per_day: the least energy over a year "
        "of serving, the job's own included; without: the least per inference).",
    )
    budget_minutes: float = Field(
        30, gt=0, le=7 * 24 * 60,
        description="Wall-clock minutes for the whole job, measurements included; the search starts no candidate "
        "it expects to overrun it.",
    )
    budget_kwh: float | None = Field(
        None, gt=0, description="Energy for the whole job; the search stops starting candidates once it is spent."
    )
    families: list[Family] | None = Field(
        None, min_length=1,
        description="Only these candidate families (see GET /v1/recipes/goal); empty: every family that fits the "
        "model, the target and the budget.",
    )
    search_rows: int = Field(
        256, ge=16, le=20_000,
        description="Rows the search calibrates and scores candidates on. They are taken apart from the evaluation "
        "rows (evaluation.max_samples), so the chosen model is measured on text the search never saw.",
    )
    max_candidates: int = Field(
        200, ge=1, le=1000,
        description="The most candidates the search evaluates; the budget or convergence usually ends it first.",
    )
    seed: int = Field(0, ge=0, description="Seeds the search's sampler and the split of the rows, for repeatable jobs.")

    @model_validator(mode="after")
    def _has_a_quality_floor(self) -> "Goal":
        if self.objective != "most_faithful" and self.min_fidelity is None and self.max_accuracy_drop is None:
            raise ValueError(
                f"objective {self.objective!r} needs a quality floor, or the answer is the crudest model: give "
                "min_fidelity (or max_accuracy_drop for a labelled classifier), or use objective 'most_faithful'"
            )
        if self.max_size_ratio is not None and self.max_size_bytes is not None:
            raise ValueError("give max_size_ratio or max_size_bytes, not both")
        if self.families is not None and len(set(self.families)) != len(self.families):
            raise ValueError("families lists a family twice")
        return self

    def constraints(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in CONSTRAINTS if getattr(self, name) is not None}

    def allowed_families(self) -> tuple[Family, ...]:
        return tuple(self.families) if self.families else FAMILIES


def goal_task_problem(task: str) -> str | None:
    """Why a model of `task` cannot take a goal yet, or None."""
    if task == "text-generation":
        return (
            "A goal searches encoder and classifier techniques; for a causal language model choose one of the "
            "llm-* presets (GET /v1/recipes/presets) or an llm_quantize recipe."
        )
    return None
