"""The `search` section of a goal job's report: every candidate measured, the front, the choice and why."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateReport(_Strict):
    number: int
    family: str
    rung: Literal["quick", "full"] | None = Field(None, description="Training families: little training, or full.")
    description: str
    recipe: dict[str, Any] = Field(description="An ordinary recipe: POST it to /v1/jobs to re-run this point.")
    size_bytes: int
    size_ratio: float = Field(description="The model file against the original's weights.")
    fidelity: float
    fidelity_metric: str
    latency_ms: float = Field(description="Median at the goal's latency_batch_size, on the job's target.")
    accuracy: float | None = None
    accuracy_drop: float | None = None
    perplexity: float | None = Field(None, description="Causal LMs: perplexity on the search rows.")
    perplexity_increase: float | None = Field(
        None, description="Causal LMs: over the original's on the search rows, as the goal means it "
        "(relative, or perplexity points).",
    )
    kwh_per_1000: float | None = Field(
        None, description="Estimated: the original's measured kWh per 1,000 inferences scaled by the latency ratio."
    )
    energy_kwh: float | None = Field(None, description="What compressing and measuring this candidate used.")
    wall_time_s: float
    estimated_s: float = Field(description="The pre-flight estimate before it ran.")
    feasible: bool
    violations: dict[str, float] = Field(description="Each broken constraint and how far past its limit, relatively.")
    pareto: bool = Field(description="No other candidate is smaller, more faithful and faster at once.")
    chosen: bool = False


class SkippedReport(_Strict):
    description: str
    reason: str


class SearchReport(_Strict):
    goal: dict[str, Any]
    objective: str
    search_rows: int = Field(description="Rows the candidates were calibrated and scored on.")
    evaluation_rows: int = Field(description="Held-out rows the chosen one is measured on (the report's figures).")
    original_perplexity: float | None = Field(
        None, description="Causal LMs: the original's perplexity on the search rows, which candidates compare with."
    )
    candidates: list[CandidateReport]
    skipped: list[SkippedReport] = Field(description="Points the search decided not to run, and why.")
    families: list[str] = Field(description="The families searched.")
    dropped_families: dict[str, str] = Field(description="Families left out before the search, and why.")
    chosen: int = Field(description="The number of the candidate shipped as the job's result.")
    reason: str
    goal_met: bool = Field(description="On the search rows; the held-out figures are the report's fidelity.")
    shortfall: dict[str, Any] | None = Field(
        None, description="When no candidate met the goal: the binding constraint, by how much, and what would meet it."
    )
    stopped_because: str
    sampler: str
    preflight: dict[str, Any] = Field(description="The estimates made before the search, from the measured speed.")
    seconds_per_row: float = Field(description="One fp32 forward row of the original at batch 32, measured here.")
    wall_time_s: float
    energy_kwh: float | None = Field(None, description="The search's energy; it counts in the job's total and payback.")
    reused: dict[str, int] = Field(
        default_factory=dict,
        description="How many times candidates took the original's export or calibration statistics computed once.",
    )
