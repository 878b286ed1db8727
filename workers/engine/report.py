"""The job report (schema_version 1): what was done to the model and what it measured.

Written as report.json into the package and next to the zip; later issues extend these models
(energy, per-slice quality, ...) by adding optional fields, never by changing existing ones.
"""

import os
import platform
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.engine.energy.schema import EnergyReport, GenerationEnergyReport, InferenceEnergyReport, PaybackReport
from workers.engine.footprint.schema import EmbodiedReport, WaterReport
from workers.engine.registry import ModelFormat
from workers.engine.search.report import SearchReport

SCHEMA_VERSION = 1
_BATCH_KEY = re.compile(r"^batch_\d+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Strict):
    p50_ms: float
    p95_ms: float
    runs: int


class LatencyReport(BaseModel):
    """Per batch size as `batch_<n>` keys (e.g. batch_1, batch_32), inputs padded to sequence_length."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, LatencyStats] = Field(init=False)

    sequence_length: int
    device: str
    runtime: str
    threads: int
    warmup_runs: int

    @model_validator(mode="after")
    def _only_batch_keys(self) -> "LatencyReport":
        for key in self.__pydantic_extra__ or {}:
            if not _BATCH_KEY.match(key):
                raise ValueError(f"unexpected latency field {key!r}; batch sizes are keyed batch_<n>")
        return self

    def batches(self) -> dict[str, LatencyStats]:
        return dict(self.__pydantic_extra__ or {})


class QualityReport(_Strict):
    accuracy: float
    macro_f1: float
    num_labelled: int


class GenerationStats(_Strict):
    time_to_first_token_ms: float = Field(description="The prompts' forward pass, which yields the first token.")
    prefill_tokens_per_s: float = Field(description="Prompt tokens processed per second, all rows together.")
    decode_tokens_per_s: float = Field(description="New tokens per second after the first, all rows together.")
    generate_s: float = Field(description="One greedy generate of new_tokens tokens, whole.")


class GenerationReport(_Strict):
    """Causal LMs on a torch runtime: transformers' KV-cache generation, medians of `repeats` runs."""

    prompt_tokens: int
    new_tokens: int
    device: str
    repeats: int
    batches: dict[str, GenerationStats] = Field(description="Per batch size, as batch_<n>.")


class ModelSideReport(_Strict):
    format: Literal["safetensors", "onnx", "cpz", "pte"]
    runtime: Literal["pytorch", "onnxruntime", "executorch"]
    size_bytes: int = Field(
        description="Weight files only: *.safetensors for the original; model.onnx for the result, or its .cpz "
        "when entropy-coded (measured after `compresso unpack`)."
    )
    total_size_bytes: int = Field(
        description="Every file of the original folder, or of the package but report.json and README.md."
    )
    num_parameters: int
    latency: LatencyReport
    quality: QualityReport | None
    generation: GenerationReport | None = None


class FidelityReport(_Strict):
    metrics: dict[str, float]
    primary_metric: str
    num_samples: int
    num_tokens: int | None = Field(None, description="Tokens compared, for language models.")
    reference: str = Field(
        "original",
        description='What the result is compared with: "original", or the finetune step whose model (a classifier '
        'for the new task) the later steps compressed, e.g. "step 1 (finetune)".',
    )
    reference_quality: QualityReport | None = Field(
        None, description="That finetuned model's accuracy on the evaluation rows, when it is not the original."
    )


class RatiosReport(_Strict):
    compression_ratio: float = Field(description="Original size_bytes / result size_bytes.")
    size_fraction: float = Field(description="Result size_bytes / original size_bytes.")
    speedup: dict[str, float] = Field(description="Per batch_<n>: original p50 / result p50.")


class StepFidelityReport(_Strict):
    metrics: dict[str, float]
    primary_metric: str
    num_samples: int = Field(description="The first rows of the evaluation set, compared with the original.")


class StepReport(_Strict):
    technique: str
    version: int
    params: dict[str, Any]
    wall_time_s: float
    format_after: ModelFormat | None = None
    size_bytes_before: int | None = Field(None, description="The model before this step (see size_bytes_after).")
    size_bytes_after: int = Field(
        description="The model after this step: torch tensor bytes, or the ONNX or .cpz file; the final figure is "
        "measured on the package."
    )
    parameters_before: int | None = None
    parameters_after: int | None = None
    fidelity_after: StepFidelityReport | None = Field(
        None, description="The model after this step against the original (or, after a finetune step, against the "
        "model it made), on the first rows of the evaluation set; null for the finetune step itself."
    )
    details: dict[str, Any] = Field(default_factory=dict, description="The technique's own figures.")
    peak_gpu_memory_mb: float | None = Field(
        None, description="The most GPU memory torch held during the step (MiB); null without a GPU."
    )
    placement: dict[str, str] = Field(
        default_factory=dict,
        description='Where each part of the step ran, e.g. {"training": "cuda"} or {"kmeans": "cpu", "rounding": "cuda"}.',
    )
    resumed_from_attempt: int | None = Field(
        None, description="Set when this attempt did not run the step: it was restored from the checkpoint that "
        "attempt saved, and this entry is that attempt's report of it."
    )


class CheckpointSaved(_Strict):
    step: int = Field(description="1-based: the checkpoint holds the model after this step (a goal job: the search "
                                   "after this many candidates).")
    seconds: float = Field(description="Time to write it, outside the steps' own time.")
    size_bytes: int
    within_step: dict[str, Any] | None = Field(
        None, description="Taken inside this step, which can go on part-way: how far it had got (llm_quantize: "
        "{pass, passes, layers_done, layers}); the model is the one after the step before."
    )


class CheckpointsReport(_Strict):
    """How this attempt used per-step checkpoints: what it resumed from, and what it saved."""

    attempt: int
    resumed_from_attempt: int | None = Field(None, description="The attempt whose checkpoint this one resumed from.")
    resumed_steps: list[int] = Field(
        default_factory=list, description="1-based steps restored instead of run (a goal job: its candidates)."
    )
    resumed_within_step: dict[str, Any] | None = Field(
        None, description="Resumed inside this step ({step, pass, passes, layers_done, layers}): it went on from "
        "where the earlier attempt's checkpoint left it."
    )
    saved: list[CheckpointSaved] = Field(default_factory=list)
    not_saved: list[str] = Field(
        default_factory=list, description="Steps whose checkpoint could not be written, and why; the job went on."
    )
    problem: str | None = Field(
        None, description="Why an existing checkpoint could not be used (every step then ran again)."
    )
    energy: str = Field(
        description="What the energy section counts of the earlier attempts."
    )


class JobReport(_Strict):
    recipe: dict[str, Any]
    device: Literal["cpu", "cuda"] = Field(description="Where the compression ran.")
    target: dict[str, str] | None = Field(
        None, description="Where the result runs, and both models were measured: {runtime, device}."
    )
    wall_time_s: float
    peak_gpu_memory_mb: float | None = Field(
        None, description="The most GPU memory torch held during the whole job (MiB); null without a GPU."
    )
    peak_rss_mb: float | None = Field(
        None, description="The engine process's peak resident memory during the job (MiB), as the kernel counted "
        "it: what the job needs of the worker's RAM. Processes it starts count apart (llm_quantize's details give "
        "llm-compressor's). A causal LM is held in its uploaded 16-bit dtype where every step takes it so."
    )
    checkpoints: CheckpointsReport | None = Field(
        None, description="Per-step checkpoints of this attempt; null when the worker asked for none (a goal job)."
    )


class EnvironmentReport(_Strict):
    python: str
    torch: str
    transformers: str
    onnx: str
    onnxruntime: str
    numpy: str
    platform: str
    cpu_count: int


class EvaluationReport(_Strict):
    dataset_source: Literal["builtin", "uploaded"]
    num_samples: int
    sequence_length: int
    batch_size: int = Field(description="Rows per batch for the fidelity pass, each padded to its longest row.")


class ModelInfoReport(_Strict):
    architecture: str = Field(description="The result's transformers class.")
    model_type: str
    task: str = Field(description="The result's task.")
    original_task: str | None = Field(
        None, description="The uploaded model's task, when a finetune step trained the result for another one."
    )
    original_architecture: str | None = None


class PackageFile(_Strict):
    path: str
    runtime: str = Field(description="What reads this file: onnxruntime, or any (transformers/tokenizers, JSON).")
    description: str


class StorageReport(_Strict):
    """How the packaging stored weights with many zeros (e.g. after pruning): a bitmask plus the
    nonzero values, which onnxruntime decodes when it loads the model."""

    sparse_tensors: int
    dense_bytes: int = Field(description="Those tensors stored dense.")
    sparse_bytes: int = Field(description="The same tensors as bitmask + nonzero values.")


class OverallSliceQuality(_Strict):
    count: int = Field(description="Rows scored: labelled rows for accuracy, else every row.")
    before: float
    after: float
    drop: float = Field(description="before - after; positive means the result is worse.")


class SliceResult(_Strict):
    name: str
    count: int
    before: float
    after: float
    drop: float
    flagged: bool = Field(description="drop exceeds the overall drop by more than the margin.")
    small: bool = Field(description="Too few rows for a steady figure; still flagged like any other.")


class SlicesReport(_Strict):
    """Per-slice quality before and after: compression tends to hurt rare groups first."""

    source: Literal["slice", "label"] | None = Field(description="Grouping column; null when the dataset has none.")
    metric: str = Field(description="accuracy, or the task's fidelity metric (before is then 1.0 by definition).")
    margin: float
    min_rows: int = Field(description="Slices with fewer scored rows are marked small.")
    overall: OverallSliceQuality
    ungrouped: int = Field(description="Scored rows without a slice (or label): in overall, in no slice.")
    slices: list[SliceResult]
    flagged: list[str]


class PerplexityPair(_Strict):
    source: str = Field(description="dataset: the job's texts; builtin: compresso's general English sample.")
    tokens: int = Field(description="Tokens scored (each predicted once).")
    window: int = Field(description="Tokens of context per window (the model's limit, or fewer for short texts).")
    stride: int = Field(description="Tokens the window moves by; each window scores only the tokens not yet scored.")
    original: float
    result: float
    relative_increase: float = Field(description="result / original - 1.")


class PerplexityReport(_Strict):
    """Causal LMs only: strided-window perplexity, before and after, on the same tokens."""

    dataset: PerplexityPair
    general: PerplexityPair


class Report(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    model: ModelInfoReport
    original: ModelSideReport
    result: ModelSideReport
    fidelity: FidelityReport
    ratios: RatiosReport
    steps: list[StepReport]
    job: JobReport
    environment: EnvironmentReport
    evaluation: EvaluationReport
    files: list[PackageFile]
    slices: SlicesReport | None = None
    perplexity: PerplexityReport | None = None
    storage: StorageReport | None = None
    # The sustainability sections (models in workers.engine.energy.schema).
    energy: EnergyReport
    inference: InferenceEnergyReport
    payback: PaybackReport
    # Causal LMs on a torch target: energy per 1,000 generated tokens and the payback in tokens.
    generation_energy: GenerationEnergyReport | None = None
    # Beyond CO2 (workers.engine.footprint.schema); optional, as reports stored before them have none.
    water: WaterReport | None = None
    embodied: EmbodiedReport | None = None
    search: SearchReport | None = Field(
        None, description="A goal job's search: every candidate, the Pareto front, and why the result was chosen."
    )


def compute_ratios(original: ModelSideReport, result: ModelSideReport) -> RatiosReport:
    original_batches = original.latency.batches()
    result_batches = result.latency.batches()
    return RatiosReport(
        compression_ratio=original.size_bytes / result.size_bytes,
        size_fraction=result.size_bytes / original.size_bytes,
        speedup={
            key: original_batches[key].p50_ms / result_batches[key].p50_ms
            for key in original_batches
            if key in result_batches and result_batches[key].p50_ms > 0
        },
    )


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def collect_environment() -> EnvironmentReport:
    return EnvironmentReport(
        python=platform.python_version(),
        torch=_package_version("torch"),
        transformers=_package_version("transformers"),
        onnx=_package_version("onnx"),
        onnxruntime=_package_version("onnxruntime"),
        numpy=_package_version("numpy"),
        platform=f"{platform.platform()} ({sys.implementation.name})",
        cpu_count=os.cpu_count() or 0,
    )
