"""Typed, read-only views of what the API returns: models, datasets, sites, jobs and their artifacts.

Each is built from the API's JSON with `from_api`, which keeps the fields named here and drops the rest,
so a newer server that adds fields does not break an older client.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from typing import Any

FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


def _datetime(value: str | None) -> datetime | None:
    """Aware, in UTC: a server on SQLite sends its times without a zone, and every stored time is UTC."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _build(cls: type, data: dict[str, Any], **converted: Any) -> Any:
    """`cls` from the API's fields of the same names (a missing required one is a KeyError), plus `converted`."""
    values = {
        field.name: data[field.name]
        for field in fields(cls)
        if field.name not in converted and (field.name in data or field.default is MISSING)
    }
    return cls(**values, **converted)


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    status: str
    architecture: str
    model_type: str
    task: str
    num_parameters: int
    size_bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Model:
        return _build(cls, data, created_at=_datetime(data["created_at"]))


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    filename: str
    num_rows: int
    columns: tuple[str, ...]
    size_bytes: int
    sha256: str
    created_at: datetime
    # Labelling makes a new version: the first version's id is the lineage every version shares.
    version: int = 1
    parent_id: str | None = None
    lineage_id: str | None = None
    num_labelled: int | None = None
    # The site whose host holds the rows (they never reach the server); None for an upload.
    site: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Dataset:
        return _build(cls, data, columns=tuple(data["columns"]), created_at=_datetime(data["created_at"]))


@dataclass(frozen=True)
class Site:
    site: str
    datasets: int  # the tenant's datasets this site holds
    queue: str  # what its worker consumes: site.<name>
    worker_alive: bool  # a worker on that queue sent a heartbeat recently

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Site:
        return _build(cls, data)


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str  # "model" (model.zip) or "report" (report.json)
    filename: str
    size_bytes: int
    sha256: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Artifact:
        return _build(cls, data)


@dataclass(frozen=True)
class StepProgress:
    index: int  # 1-based position in the recipe
    technique: str
    state: str  # pending, running, done, failed, cancelled, not run
    wall_time_s: float | None = None
    size_bytes_after: int | None = None
    resumed_from_attempt: int | None = None  # this earlier attempt's checkpoint was restored instead of running it
    resumed_inside: str | None = None  # went on from an earlier attempt's checkpoint inside it, e.g. "layer 25 of 33"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> StepProgress:
        return _build(cls, data)


@dataclass(frozen=True)
class Job:
    id: str
    name: str | None
    status: str  # queued, running, succeeded, failed, cancelled
    stage: str | None  # the stage running now; on a failed or cancelled job, the one it stopped in
    fraction: float  # 0 to 1
    steps: tuple[StepProgress, ...]
    error: str | None
    model_id: str | None
    dataset_id: str | None
    device: str
    queue: str
    recipe: dict[str, Any]
    evaluation: dict[str, Any]
    deployment: dict[str, Any]
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    artifacts: tuple[Artifact, ...]
    webhook_url: str | None = None
    mlflow: dict[str, Any] | None = None  # the options and, once finished, the logged run or its error
    time_limits: dict[str, Any] | None = None
    preset: str | None = None  # the preset the recipe came from, if the job named one
    goal: dict[str, Any] | None = None  # a goal job's goal; its recipe is the one the search chose
    preflight: dict[str, Any] | None = None  # a goal job's estimate before any compute

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def artifact(self, kind: str) -> Artifact | None:
        return next((artifact for artifact in self.artifacts if artifact.kind == kind), None)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Job:
        progress = data["progress"]
        return _build(
            cls, data, stage=progress["stage"], fraction=progress["fraction"],
            steps=tuple(StepProgress.from_api(step) for step in progress.get("steps", [])),
            created_at=_datetime(data["created_at"]), started_at=_datetime(data["started_at"]),
            finished_at=_datetime(data["finished_at"]),
            artifacts=tuple(Artifact.from_api(artifact) for artifact in data["artifacts"]),
        )
