"""A job's goal: the constraints its result must meet, what to optimise among the results that meet
them, and the budget of the search. Kept free of torch, so the API validates goals without it.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Objective = Literal["smallest", "fastest", "most_faithful", "least_energy"]
# The candidate families a search may try; `families` in a goal narrows them. Encoders and classifiers
# take the first group; causal LMs take the llm_* families, each an llm_quantize step (llm-compressor).
Family = Literal[
    "half", "int8", "int8_static", "int4", "cluster", "qat", "prune_cluster", "distill_int8", "low_rank_int8",
    "llm_w4a16", "llm_w8a16", "llm_w8a8", "llm_fp8", "llm_2of4_fp8",
]
ENCODER_FAMILIES: tuple[Family, ...] = (
    "half", "int8", "int8_static", "int4", "cluster", "qat", "prune_cluster", "distill_int8", "low_rank_int8",
)
LLM_FAMILIES: tuple[Family, ...] = ("llm_w4a16", "llm_w8a16", "llm_w8a8", "llm_fp8", "llm_2of4_fp8")
FAMILIES: tuple[Family, ...] = ENCODER_FAMILIES + LLM_FAMILIES
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
    "llm_w4a16": "causal LMs: 4-bit weights in groups of 32 to 128, rounded by round-to-nearest, GPTQ or AWQ "
    "(a compressed-tensors checkpoint for vLLM and transformers)",
    "llm_w8a16": "causal LMs: 8-bit per-channel weights, by round-to-nearest or GPTQ",
    "llm_w8a8": "causal LMs: int8 weights and per-token dynamic int8 activations, by round-to-nearest or GPTQ, "
    "with or without SmoothQuant",
    "llm_fp8": "causal LMs: fp8 weights and per-token dynamic fp8 activations (fast on Hopper and Ada GPUs)",
    "llm_2of4_fp8": "causal LMs: SparseGPT zeroes two weights in every four, then fp8 (2:4 sparse tensor cores)",
}
TRAINING_FAMILIES: frozenset[Family] = frozenset({"qat", "prune_cluster", "distill_int8", "low_rank_int8"})
CONSTRAINTS = (
    "min_fidelity", "max_accuracy_drop", "max_perplexity_increase", "max_size_ratio", "max_size_bytes",
    "max_latency_ms",
)
QUALITY_CONSTRAINTS = ("min_fidelity", "max_accuracy_drop", "max_perplexity_increase")


class Goal(BaseModel):
    """Constraints, an objective and a budget; the job searches for the result instead of taking a recipe."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False,
        json_schema_extra={"examples": [{"min_fidelity": 0.99, "objective": "smallest", "budget_minutes": 30}]},
    )

    min_fidelity: float | None = Field(
        None, gt=0, le=1,
        description="The result's outputs must stay this close to the original's: the mean cosine of the embeddings "
        "(encoders), the top-1 agreement (classifiers) or the next-token top-1 agreement (causal LMs), on the search "
        "rows and then on held-out rows.",
    )
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1,
        description="Classifiers with a labelled dataset: the most accuracy the result may lose against the labels, "
        "absolute (0.01 = one point) or relative to the original's accuracy (see drop_is).",
    )
    drop_is: Literal["absolute", "relative"] = Field(
        "absolute", description="How max_accuracy_drop is meant: accuracy points, or a fraction of the original's."
    )
    max_perplexity_increase: float | None = Field(
        None, ge=0,
        description="Causal LMs: the most the result's perplexity on the search rows may rise over the original's, "
        "relative (0.01 = 1% higher, the default reading) or in perplexity points (see perplexity_increase_is).",
    )
    perplexity_increase_is: Literal["relative", "absolute"] = Field(
        "relative", description="How max_perplexity_increase is meant: a fraction of the original's perplexity, "
        "or perplexity points.",
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
        has_floor = any(getattr(self, name) is not None for name in QUALITY_CONSTRAINTS)
        if self.objective != "most_faithful" and not has_floor:
            raise ValueError(
                f"objective {self.objective!r} needs a quality floor, or the answer is the crudest model: give "
                "min_fidelity (or max_accuracy_drop for a labelled classifier, or max_perplexity_increase for a "
                "causal LM), or use objective 'most_faithful'"
            )
        if self.max_size_ratio is not None and self.max_size_bytes is not None:
            raise ValueError("give max_size_ratio or max_size_bytes, not both")
        if self.families is not None and len(set(self.families)) != len(self.families):
            raise ValueError("families lists a family twice")
        return self

    def constraints(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in CONSTRAINTS if getattr(self, name) is not None}

    def allowed_families(self, task: str) -> tuple[Family, ...]:
        """The families the goal names, or every family for a model of `task`."""
        if self.families:
            return tuple(self.families)
        return LLM_FAMILIES if task == "text-generation" else ENCODER_FAMILIES


def goal_task_problem(goal: Goal, task: str) -> tuple[str, str] | None:
    """(the goal's field, why) when the goal cannot apply to a model of `task`, or None."""
    if goal.max_perplexity_increase is not None and task != "text-generation":
        return "max_perplexity_increase", (
            f"perplexity needs a causal language model, and this model's task is {task}: use min_fidelity"
        )
    if goal.max_accuracy_drop is not None and task != "text-classification":
        return "max_accuracy_drop", (
            f"accuracy needs a classifier, and this model's task is {task}: use min_fidelity"
            + (" or max_perplexity_increase" if task == "text-generation" else "")
        )
    return None
