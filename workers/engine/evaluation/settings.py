"""How a model is evaluated: sample count, sequence length, batch sizes and timing repeats.

Kept free of torch so the API can validate a job's evaluation settings without loading it.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_samples: int = Field(256, ge=1, le=100_000, description="First rows of the dataset used.")
    sequence_length: int = Field(128, ge=8, le=8192, description="Truncation length; latency inputs are padded to it.")
    batch_size: int = Field(32, ge=1, le=1024, description="Rows per batch of the fidelity pass.")
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field([1, 32], min_length=1, description="Batch sizes timed.")
    latency_warmup: int = Field(3, ge=0, le=100, description="Untimed runs before timing each batch size.")
    latency_repeats: int = Field(20, ge=1, le=10_000, description="Timed runs per batch size.")
