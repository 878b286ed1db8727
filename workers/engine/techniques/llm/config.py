"""The `llm_quantize` technique's params: the scheme, the algorithm that rounds the weights, optional
2:4 sparsity and fp8 KV cache, and the layers left in higher precision."""

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from workers.engine.registry import TechniqueConfig

LlmScheme = Literal["w4a16", "w8a16", "w8a8", "fp8"]
LlmAlgorithm = Literal["gptq", "awq", "rtn"]
# Which algorithms each scheme takes. AWQ searches scales for 4-bit weights only; fp8's dynamic
# per-token activations and per-channel weights need no calibration, so plain rounding is the method.
ALGORITHMS_BY_SCHEME: dict[str, tuple[str, ...]] = {
    "w4a16": ("gptq", "awq", "rtn"),
    "w8a16": ("gptq", "rtn"),
    "w8a8": ("gptq", "rtn"),
    "fp8": ("rtn", "gptq"),
}
DEFAULT_ALGORITHM = {"w4a16": "gptq", "w8a16": "gptq", "w8a8": "gptq", "fp8": "rtn"}
DEFAULT_KEEP = ("lm_head",)


class LlmQuantizeConfig(TechniqueConfig):
    technique: ClassVar[str] = "llm_quantize"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Quantizes a causal LM layer by layer with llm-compressor and ships a compressed-tensors checkpoint "
        "(safetensors shards plus quantization_config in config.json), which vLLM loads natively and "
        "transformers reloads with compressed-tensors installed. "
        "w4a16: 4-bit weights in groups, 16-bit activations (GPTQ with activation order, AWQ, or round-to-nearest); "
        "w8a16: 8-bit per-channel weights; "
        "w8a8: int8 per-channel weights and per-token dynamic int8 activations, after SmoothQuant; "
        "fp8: fp8 per-channel weights and per-token dynamic fp8 activations (Hopper and Ada GPUs). "
        "sparsity 2:4 prunes half the weights of each group of four with SparseGPT first (stored as zeros: "
        "compressed-tensors no longer packs 2:4, so it saves no bytes on disk). "
        "Layers matched by keep (the lm_head by default) stay in 16 bits. Needs the target runtime torch. "
        "Must be the last step."
    )
    requires_data: ClassVar[bool] = True
    takes_stored_dtype: ClassVar[bool] = True  # it saves the model in that dtype for llm-compressor anyway
    output_format: ClassVar[Literal["compressed-tensors"]] = "compressed-tensors"

    scheme: LlmScheme = Field(description="How weights and activations are stored; see the description.")
    algorithm: LlmAlgorithm | None = Field(
        None,
        description="How weights are rounded: gptq (error compensation layer by layer on the calibration texts), "
        "awq (activation-aware scales, w4a16 only) or rtn (round to nearest, no data). "
        "Default: gptq, except rtn for fp8.",
    )
    group_size: int = Field(
        128, description="w4a16: weights per scale, a power of two from 32 to 256. Smaller is more faithful and larger."
    )
    activation_order: bool = Field(
        True, description="gptq: quantize the columns with the largest activations first (GPTQ's act-order)."
    )
    smoothing_strength: float | None = Field(
        None, ge=0.0, le=1.0,
        description="w8a8: how much of the activations' outliers SmoothQuant moves into the weights (default 0.8; "
        "0 turns SmoothQuant off). Only w8a8 quantizes activations to int8, so only it takes this.",
    )
    sparsity: Literal["none", "2:4"] = Field(
        "none", description="2:4: SparseGPT zeroes two weights in every four first (GPU sparse tensor cores)."
    )
    kv_cache: Literal["none", "fp8"] = Field(
        "none", description="fp8: calibrate per-tensor fp8 scales for the attention's keys and values (vLLM's fp8 KV cache)."
    )
    keep: list[str] = Field(
        default_factory=lambda: list(DEFAULT_KEEP),
        description="Regular expressions searched in Linear layer names; matching layers stay in 16 bits "
        "(the lm_head, or a sensitive layer such as 'layers\\.0\\.mlp\\.down_proj').",
    )
    calibration_samples: int = Field(
        128, ge=1, le=4096, description="Texts of the job's dataset that calibrate gptq, awq, SmoothQuant and SparseGPT."
    )
    max_sequence_length: int = Field(
        2048, ge=16, le=131072, description="Tokens per calibration text at most (the model's own limit applies too)."
    )

    @model_validator(mode="after")
    def _check(self) -> "LlmQuantizeConfig":
        algorithm = self.resolved_algorithm()
        if algorithm not in ALGORITHMS_BY_SCHEME[self.scheme]:
            allowed = ", ".join(ALGORITHMS_BY_SCHEME[self.scheme])
            raise ValueError(f"algorithm {algorithm!r} does not take scheme {self.scheme!r}; use one of {allowed}")
        if self.group_size & (self.group_size - 1) or not 32 <= self.group_size <= 256:
            raise ValueError(f"group_size must be a power of two from 32 to 256, not {self.group_size}")
        if self.smoothing_strength is not None and self.scheme != "w8a8":
            raise ValueError("smoothing_strength applies to scheme w8a8 only (the one with int8 activations)")
        for pattern in self.keep:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"keep pattern {pattern!r} is not a regular expression: {exc}") from exc
        return self

    def resolved_algorithm(self) -> str:
        return self.algorithm or DEFAULT_ALGORITHM[self.scheme]

    def resolved_smoothing(self) -> float:
        """SmoothQuant's strength for this step; 0 when it does not run."""
        if self.scheme != "w8a8" or (self.resolved_algorithm() == "rtn" and self.smoothing_strength is None):
            return 0.0
        return 0.8 if self.smoothing_strength is None else self.smoothing_strength
