"""How a model is evaluated: sample count, sequence length, batch sizes and timing repeats.

Kept free of torch so the API can validate a job's evaluation settings without loading it.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_samples: int = Field(256, ge=1, le=100_000, description="First rows of the dataset used.")
    sequence_length: int = Field(128, ge=8, le=8192, description="Truncation length; latency inputs are padded to it.")
    batch_size: int = Field(32, ge=1, le=1024, description="Rows per batch of the fidelity pass.")
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field([1, 32], min_length=1, description="Batch sizes timed.")
    latency_warmup: int = Field(3, ge=0, le=100, description="Untimed runs before timing each batch size.")
    latency_repeats: int = Field(20, ge=1, le=10_000, description="Timed runs per batch size.")
    # Inference energy (workers.engine.energy.inference): at least 2 runs, or there is no spread to
    # tell a saving from noise.
    energy_repeats: int = Field(5, ge=2, le=100, description="Tracked runs per model for the energy per inference.")
    energy_batch_size: int = Field(32, ge=1, le=1024, description="Rows per batch, padded to sequence_length.")
    # 128 x 5 runs: on all-MiniLM-L6-v2 the measured noise band was ~27x smaller than the saving,
    # at about 16 s per job on 2 cores; more runs only buy a narrower band.
    energy_inferences_per_run: int = Field(
        128, ge=1, le=1_000_000, description="Inferences per run, rounded up to whole batches."
    )
    perplexity_window: int = Field(
        2048, ge=16, le=131072,
        description="Causal LMs: tokens of context per perplexity window (the model's own limit applies too).",
    )
    perplexity_max_tokens: int = Field(
        65536, ge=64, le=10_000_000, description="Causal LMs: tokens scored at most per text set for perplexity."
    )
    slice_margin: float = Field(
        0.02, ge=0.0, le=1.0, description="A slice is flagged when its drop exceeds the overall drop by more than this."
    )
