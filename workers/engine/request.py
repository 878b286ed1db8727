"""What a job asks the engine for (the worker's spec, validated) and what it gets back."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.engine.checkpoints.settings import CheckpointSettings
from workers.engine.energy.settings import EnergySettings
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.federated.config import FederationSettings
from workers.engine.footprint.settings import FootprintSettings
from workers.engine.recipe import Recipe
from workers.engine.search.goal import Goal
from workers.engine.target import Target


class PipelineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    model_dir: Path
    recipe: Recipe | None = Field(None, description="The steps to apply; give this or goal.")
    goal: Goal | None = Field(None, description="Search for the recipe that best meets this goal; give this or recipe.")
    dataset_path: Path | None = None
    dataset_sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="Of the uploaded dataset file, for the model card."
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the compression itself runs.")
    target: Target = Field(
        default_factory=Target, description="Where the result will run: what it is built for and measured on."
    )
    work_dir: Path = Field(description="Scratch space for this job; the caller removes it afterwards.")
    output_dir: Path = Field(description="Receives model.zip and report.json.")
    eval: EvalSettings = Field(default_factory=EvalSettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    footprint: FootprintSettings = Field(default_factory=FootprintSettings)
    model_paths: dict[str, Path] = Field(
        default_factory=dict, description="Other uploaded model folders by id, for steps that name one."
    )
    llm_python: Path | None = Field(
        None, description="The interpreter that has llm-compressor; empty: .venv-llm beside the running venv."
    )
    federation: FederationSettings = Field(
        default_factory=FederationSettings, description="Where a federated step's coordinator listens, and its Python."
    )
    checkpoints: CheckpointSettings | None = Field(
        None, description="Save a checkpoint after each recipe step (a goal's search: after each candidate), and "
        "resume from one; None: neither."
    )


    @model_validator(mode="after")
    def _recipe_or_goal(self) -> "PipelineRequest":
        if (self.recipe is None) == (self.goal is None):
            raise ValueError("give exactly one of recipe or goal")
        return self


@dataclass(frozen=True)
class PipelineResult:
    report: dict[str, Any]
    model_zip: Path
    report_path: Path
