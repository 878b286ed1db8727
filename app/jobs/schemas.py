"""Request and response shapes of the jobs API."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.artifacts.schemas import ArtifactOut
from app.jobs.step_progress import StepProgress, step_progress
from workers.engine.evaluation.settings import EvalSettings
from workers.engine.search.goal import Goal
from workers.engine.target import Target

Device = Literal["auto", "cpu", "cuda"]

EXAMPLE_RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}


class Deployment(BaseModel):
    """Where the compressed model will serve: sets the grid, WUE and rate of the payback figures."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    country: str | None = Field(
        None,
        pattern="^[A-Z]{3}$",
        description="ISO 3166 alpha-3 code of the serving grid (e.g. DEU). Empty: the workers' COMPRESSO_CARBON_COUNTRY.",
    )
    requests_per_day: float | None = Field(None, gt=0, description="Expected inferences per day, for break-even days.")
    wue_l_per_kwh: float | None = Field(
        None, ge=0, le=100,
        description="On-site water of the serving data centre per kWh of IT energy (its WUE), for the water per "
        "inference. Empty: the workers' COMPRESSO_WUE_L_PER_KWH.",
    )


class MlflowOptions(BaseModel):
    """Log the finished job as an MLflow run: recipe as params, report figures as metrics, the package,
    the report and the ONNX model (registered under `registered_model_name`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tracking_uri: str | None = Field(
        None, max_length=2000,
        description="An http(s) MLflow tracking server for this job. Empty: the server's COMPRESSO_MLFLOW_TRACKING_URI.",
    )
    experiment_name: str | None = Field(None, min_length=1, max_length=250)
    registered_model_name: str | None = Field(
        None, min_length=1, max_length=250, description="Register the compressed model under this name (a new version)."
    )


class TimeLimits(BaseModel):
    """How long this job may run; empty fields take the server's defaults (COMPRESSO_TIME_LIMITS__*)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    soft_seconds: float | None = Field(
        None, gt=0, le=30 * 24 * 3600, description="Past it the engine is asked to stop and the job ends timed_out."
    )
    hard_seconds: float | None = Field(
        None, gt=0, le=30 * 24 * 3600, description="Past it an engine that has not stopped is killed."
    )

    @model_validator(mode="after")
    def _hard_after_soft(self) -> "TimeLimits":
        if self.soft_seconds and self.hard_seconds and self.hard_seconds < self.soft_seconds:
            raise ValueError("hard_seconds must be at least soft_seconds")
        return self


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"model_id": "…", "recipe": EXAMPLE_RECIPE}]})

    model_id: str
    dataset_id: str | None = None
    name: str | None = Field(None, max_length=200)
    device: Device = Field(
        "auto",
        description='Where the compression runs. "auto": a GPU worker when the target is cuda, else where '
        "COMPRESSO_AUTO_DEVICE says.",
    )
    target: Target = Field(
        default_factory=Target,
        description="Where the compressed model will run: onnxruntime or torch, on cpu or cuda. The result is built "
        "for it, and the original and the result are both measured on it.",
    )
    recipe: dict[str, Any] | None = Field(
        None, description="An ordered list of technique steps; see GET /v1/techniques. Give this, preset or goal."
    )
    preset: str | None = Field(
        None, max_length=100, description="A named recipe from GET /v1/recipes/presets. Give this, recipe or goal."
    )
    goal: Goal | None = Field(
        None,
        description="Constraints, an objective and a budget instead of a recipe: the job searches the technique "
        "families for the Pareto front and ships the candidate that best meets the goal (or, when none does, the "
        "closest, with the constraint that binds). Give this, recipe or preset.",
    )
    evaluation: EvalSettings = Field(
        default_factory=EvalSettings, description="How the original and the result are measured."
    )
    deployment: Deployment = Field(default_factory=Deployment)
    mlflow: MlflowOptions | None = Field(None, description="Log the finished job to MLflow.")
    time_limits: TimeLimits | None = Field(
        None, description="Soft and hard time limits of the whole job; a step's own is its time_limit_seconds param."
    )
    webhook_url: str | None = Field(
        None,
        max_length=2000,
        description="Gets a POST on every state change (job.queued, job.running, job.succeeded, ...), signed with "
        "the tenant's secret (GET /v1/webhooks/secret); retried with backoff until it answers 2xx.",
    )


class Progress(BaseModel):
    stage: str | None = Field(description="The stage running now; on a failed or cancelled job, the one it stopped in.")
    fraction: float
    steps: list[StepProgress] = Field(default_factory=list, description="Each recipe step's state.")


EXAMPLE_JOB = {
    "id": "c0ffee0a1b2c4d3e8f9a0b1c2d3e4f5a", "name": "minilm-int8", "status": "running",
    "progress": {"stage": "step_1.quantize", "fraction": 0.42, "steps": [
        {"index": 1, "technique": "quantize", "state": "running", "wall_time_s": None, "size_bytes_after": None}]},
    "error": None, "model_id": "3f2c9e0a5b7d4c1e8a6f0b2d4e6c8a1f", "dataset_id": None, "device": "cpu",
    "target": {"runtime": "onnxruntime", "device": "cpu"}, "queue": "cpu",
    "recipe": {"steps": [{"technique": "quantize", "version": 1,
                          "params": {"scheme": "int8_dynamic", "per_channel": True, "keep_fp32": []}}]},
    "evaluation": {"max_samples": 320, "sequence_length": 128}, "deployment": {"country": "DEU", "requests_per_day": 100000},
    "attempts": 1, "cancel_requested": False, "created_at": "2026-11-28T17:58:04Z",
    "started_at": "2026-11-28T17:58:05Z", "finished_at": None, "artifacts": [],
}


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOB]})

    id: str
    name: str | None
    status: str
    progress: Progress
    error: str | None
    model_id: str | None
    dataset_id: str | None
    device: str
    target: dict[str, Any] = Field(description="Where the result runs and both models are measured: {runtime, device}.")
    queue: str
    recipe: dict[str, Any]
    preset: str | None = Field(None, description="The preset the recipe came from, if the job named one.")
    goal: dict[str, Any] | None = Field(
        None, description="A goal job's goal; its recipe has no steps until the search has chosen one."
    )
    preflight: dict[str, Any] | None = Field(
        None, description="A goal job's estimate before any compute: expected seconds, peak memory, families dropped."
    )
    evaluation: dict[str, Any]
    deployment: dict[str, Any]
    webhook_url: str | None = None
    mlflow: dict[str, Any] | None = Field(
        None, description="The MLflow options and, once finished, the logged run (run_id, model_version) or its error."
    )
    time_limits: dict[str, Any] | None = None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    artifacts: list[ArtifactOut]

    @classmethod
    def from_job(cls, job) -> "JobOut":  # noqa: ANN001
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            progress=Progress(stage=job.stage, fraction=job.progress, steps=step_progress(job)),
            error=job.error,
            model_id=job.model_id,
            dataset_id=job.dataset_id,
            device=job.device,
            target=job.target,
            queue=job.queue,
            recipe=job.recipe,
            preset=job.preset,
            goal=job.goal,
            preflight=job.preflight,
            evaluation=job.evaluation,
            deployment=job.deployment,
            webhook_url=job.webhook_url,
            mlflow=job.mlflow,
            time_limits=job.time_limits,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            artifacts=[ArtifactOut.model_validate(a) for a in job.artifacts],
        )
