"""The `prune` technique's versioned params and their validation."""

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from workers.engine.name_patterns import TASK_HEAD_PATTERNS, NamePatterns
from workers.engine.registry import TechniqueConfig
from workers.engine.training.settings import RecoverySettings

Structure = Literal["unstructured", "2:4", "neurons", "heads"]
TWO_FOUR_SPARSITY = 0.5


class PruneConfig(TechniqueConfig):
    technique: ClassVar[str] = "prune"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Removes the least important weights. unstructured and 2:4 zero single weights of the Linear layers "
        "(embeddings are never pruned) and need sparse storage to shrink the file; neurons and heads remove "
        "FFN channels or attention heads physically, so the model gets smaller and faster. Loses much "
        "fidelity on its own (50% global magnitude: 0.73 cosine on MiniLM), so follow it with recovery."
    )
    # Magnitude ignores the texts; activation and gradient importance need them.
    requires_data: ClassVar[bool] = True
    model_config = ConfigDict(json_schema_extra={"examples": [{"structure": "neurons", "sparsity": 0.25}]})

    structure: Structure = Field(
        description="unstructured: single weights; 2:4: 2 of every 4 consecutive input weights (sparsity 0.5); "
        "neurons: FFN channels; heads: attention heads."
    )
    sparsity: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Fraction removed: of the prunable weights (unstructured), of the FFN neurons (neurons) or "
        "of the attention heads (heads). Required, except for 2:4, which is always 0.5.",
    )
    scope: Literal["global", "per_layer"] = Field(
        "global",
        description="global: one ranking across layers, so layers lose different amounts; per_layer: every "
        "layer loses the same fraction (for neurons this keeps the folder loadable by plain transformers). "
        "Does not apply to 2:4, which is decided in each group of 4. With activation importance on "
        "unstructured, prefer per_layer: activation scales differ between layers (MiniLM, 50%: 0.85 vs 0.70).",
    )
    importance: Literal["magnitude", "activation", "gradient"] = Field(
        "magnitude",
        description="magnitude: weight size only; activation: weights times input activations on the dataset "
        "(Wanda; output norms for neurons and heads); gradient: first-order estimate of how much removing "
        "each part moves the model's outputs on the dataset. The data-aware ones cost a pass (activation) "
        "or a backward pass (gradient) over the texts and keep much more fidelity (MiniLM, 25% of heads: "
        "0.96 vs 0.83 for magnitude).",
    )
    skip: NamePatterns = Field(
        default_factory=lambda: list(TASK_HEAD_PATTERNS),
        description="Regular expressions searched in module names: matching Linear layers (unstructured, 2:4) "
        "or transformer layers, e.g. 'encoder.layer.0$' (neurons, heads), are left whole. The default "
        "leaves the task heads and poolers whole.",
    )
    recover: RecoverySettings | None = Field(
        None,
        description="Fine-tune the pruned model afterwards to reproduce the unpruned one on the job's texts "
        "(the distillation loss); pruned weights stay zero. Empty: no recovery.",
    )
    calibration_samples: int = Field(
        128,
        ge=1,
        le=4096,
        description="Dataset texts used for activation or gradient importance and for timing the model.",
    )


    @model_validator(mode="after")
    def _sparsity_fits_structure(self) -> "PruneConfig":
        if self.structure == "2:4":
            if self.sparsity is not None and self.sparsity != TWO_FOUR_SPARSITY:
                raise ValueError(
                    f"2:4 pruning always removes half the weights; set sparsity to {TWO_FOUR_SPARSITY} or leave it "
                    "out (use structure 'unstructured' for another sparsity)"
                )
        elif self.sparsity is None:
            raise ValueError(f"structure {self.structure!r} needs a sparsity between 0 and 1, e.g. 0.5")
        return self

    @property
    def fraction(self) -> float:
        return TWO_FOUR_SPARSITY if self.sparsity is None else self.sparsity
