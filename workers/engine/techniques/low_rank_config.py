"""The `low_rank` technique's params (the handler is workers.engine.techniques.low_rank): kept apart
so that the API validates recipes without importing torch."""

from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from workers.engine.name_patterns import TASK_HEAD_PATTERNS, NamePatterns
from workers.engine.registry import TechniqueConfig
from workers.engine.training.settings import RecoverySettings


class LowRankConfig(TechniqueConfig):
    technique: ClassVar[str] = "low_rank"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Factorises each Linear layer into two thinner ones with a truncated SVD; a layer is left whole "
        "when factorising would not save parameters. Loses much fidelity on its own, so it is usually "
        "followed by recovery fine-tuning and/or quantize."
    )
    # Neither rank rule is required on its own, so clients (the dashboard's builder) start from this.
    model_config = ConfigDict(json_schema_extra={"examples": [{"energy": 0.99}]})

    rank_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Rank kept, as a fraction of min(in_features, out_features) of each layer. "
        "Give this or energy.",
    )
    energy: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Keep the smallest rank whose singular values hold this share of the layer's spectral "
        "energy (sum of squared singular values), e.g. 0.99. 1 would keep full rank, so it is excluded. "
        "Give this or rank_fraction.",
    )
    recover: RecoverySettings | None = Field(
        None,
        description="Fine-tune the factorised model afterwards to reproduce the original on the job's texts "
        "(the distillation loss). Empty: no recovery.",
    )
    skip: NamePatterns = Field(
        default_factory=lambda: list(TASK_HEAD_PATTERNS),
        description="Regular expressions searched in module names (e.g. 'bert.encoder.layer.0.output.dense'); "
        "matching layers are left whole. The default leaves the task heads and poolers whole.",
    )


    @model_validator(mode="after")
    def _exactly_one_rank_rule(self) -> "LowRankConfig":
        if (self.rank_fraction is None) == (self.energy is None):
            raise ValueError("give exactly one of rank_fraction or energy")
        return self
