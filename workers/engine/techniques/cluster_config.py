"""The `cluster` technique's params (the handler is workers.engine.techniques.cluster): kept apart
so that the API validates recipes without importing torch."""

from typing import ClassVar, Literal

from pydantic import Field

from workers.engine.name_patterns import TASK_HEAD_PATTERNS, NamePatterns
from workers.engine.registry import TechniqueConfig


class ClusterConfig(TechniqueConfig):
    technique: ClassVar[str] = "cluster"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Weight sharing: k-means gives each weight tensor 2^bits shared values, stored as uint8 indices "
        "plus a codebook in the ONNX file (about 4x smaller than fp32, and as fast: onnxruntime decodes "
        "it at load time). Follow it with entropy coding to turn fewer bits into fewer bytes. Must be "
        "the last torch step."
    )
    # Calibration texts feed the error compensation; the pipeline always has some (builtin ones at worst).
    requires_data: ClassVar[bool] = True
    output_format: ClassVar[Literal["onnx"]] = "onnx"

    bits: int = Field(
        ge=2, le=8, description="Each tensor keeps at most 2^bits distinct values: 2 (4 values) to 8 (256)."
    )
    embedding_bits: int | None = Field(
        None,
        ge=2,
        le=8,
        description="Bits of the word-embedding table when it differs from bits: it holds about half of a "
        "small encoder's weights and tolerates fewer values than the layers do. Empty: bits.",
    )
    embeddings: bool = Field(
        True,
        description="Also cluster the word-embedding table (about half of a small encoder's parameters; it "
        "tolerates sharing well).",
    )
    error_compensation: bool = Field(
        True,
        description="GPTQ-style: assign each weight column to the codebook in turn and spread its error over "
        "the columns not yet assigned, using input statistics of the calibration texts. Costs a forward "
        "pass over the texts and a few seconds per layer; keeps the outputs much closer at few bits.",
    )
    skip: NamePatterns = Field(
        default_factory=lambda: list(TASK_HEAD_PATTERNS),
        description="Regular expressions searched in module paths (e.g. 'bert.encoder.layer.0.output.dense', "
        "'bert.embeddings.word_embeddings', 'lm_head') and parameter names (module path + '.weight'); "
        "matching tensors stay fp32. The default leaves the task heads and poolers alone.",
    )
    min_elements: int = Field(
        1024, ge=1, description="Tensors with fewer elements stay fp32: their codebook would cost more than it saves."
    )
    max_iterations: int = Field(
        100, ge=1, le=10_000, description="Cap on k-means iterations per tensor; it usually converges well before."
    )
