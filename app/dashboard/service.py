"""What the dashboard pages show, gathered through the same repositories and services as the API."""

from dataclasses import asdict, dataclass
from typing import Any, get_args

from sqlalchemy.orm import Session

from app.dashboard.charts import all_charts
from app.datasets import repository as datasets_repository
from app.datasets import suggestions
from app.datasets.schemas import SuggestionOut
from app.datasets.service import get_dataset
from app.db.base import as_utc, utcnow
from app.job_logs import repository as job_logs_repository
from app.jobs import repository as jobs_repository
from app.jobs import service as jobs_service
from app.jobs.orm import FINISHED_STATUSES, Job
from app.jobs.step_progress import step_progress
from app.models import repository as models_repository
from app.reports import repository as tenant_totals
from app.reports.orm import TOTAL_FIELDS, TenantTotals
from workers.engine.search.goal import Objective

RECENT_JOBS = 20
# Lines of the job log rendered with the page; the rest is a link to the API away.
LOG_LINES_ON_PAGE = 1000


@dataclass(frozen=True)
class Column:
    """One column of an uploads table; `format` is shared by the template and uploads.js."""

    key: str
    label: str
    format: str = "text"  # text, count, megabytes, hash, list, label_link


@dataclass(frozen=True)
class UploadKind:
    """What differs between the models and the datasets page: the rest is one template and one script."""

    title: str
    noun: str
    endpoint: str
    accept: str
    hint: str
    columns: tuple[Column, ...]

    def column_specs(self) -> list[dict[str, str]]:
        return [asdict(column) for column in self.columns]


MODELS = UploadKind(
    title="Models",
    noun="model",
    endpoint="/v1/models",
    accept=".zip,.tar.gz,.tgz",
    hint="A .zip or .tar.gz of a Hugging Face model folder: config.json, *.safetensors, tokenizer files.",
    columns=(
        Column("name", "Name"),
        Column("architecture", "Architecture"),
        Column("task", "Task"),
        Column("num_parameters", "Parameters", "count"),
        Column("size_bytes", "Size", "megabytes"),
        Column("sha256", "sha256", "hash"),
    ),
)
DATASETS = UploadKind(
    title="Datasets",
    noun="dataset",
    endpoint="/v1/datasets",
    accept=".jsonl,.csv",
    hint="A .jsonl or .csv file with column text, and optional text_pair, label and slice.",
    columns=(
        Column("name", "Name"),
        Column("filename", "File"),
        Column("version", "Version"),
        Column("num_rows", "Rows", "count"),
        Column("num_labelled", "Labelled", "count"),
        Column("columns", "Columns", "list"),
        Column("size_bytes", "Size", "megabytes"),
        Column("sha256", "sha256", "hash"),
        Column("id", "Labels", "label_link"),
    ),
)


DEVICES = ("auto", "cpu", "cuda")
# The job's target ("runtime/device" as the form sends it), the default first.
TARGETS = (
    ("onnxruntime/cpu", "onnxruntime on CPU (ONNX file)"),
    ("onnxruntime/cuda", "onnxruntime on GPU (ONNX file)"),
    ("torch/cpu", "PyTorch on CPU (transformers folder)"),
    ("torch/cuda", "PyTorch on GPU (transformers folder)"),
    ("executorch/cpu", "ExecuTorch on phones and edge CPUs (.pte)"),
)


@dataclass(frozen=True)
class Totals:
    models_compressed: int
    bytes_saved: int
    energy_spent_kwh: float
    co2e_spent_g: float
    energy_saved_kwh_per_day: float
    water_spent_l: float
    embodied_spent_gco2e: float
    water_saved_l_per_day: float


def overview(session: Session, tenant_id: str) -> dict[str, Any]:
    # The tenant's running totals: one row, however many jobs (app.reports.orm.TenantTotals).
    totals = tenant_totals.get(session, tenant_id) or TenantTotals(**dict.fromkeys(TOTAL_FIELDS, 0))
    return {
        "jobs": jobs_repository.recent(session, tenant_id, RECENT_JOBS),
        "models": models_repository.list_all(session, tenant_id),
        "datasets": datasets_repository.list_all(session, tenant_id),
        "totals": Totals(
            models_compressed=totals.jobs_succeeded,
            bytes_saved=totals.bytes_saved,
            energy_spent_kwh=totals.energy_kwh,
            co2e_spent_g=totals.co2e_g,
            energy_saved_kwh_per_day=totals.saving_kwh_per_day,
            water_spent_l=totals.water_l,
            embodied_spent_gco2e=totals.embodied_gco2e,
            water_saved_l_per_day=totals.saving_water_l_per_day,
        ),
    }


def job_page(session: Session, tenant_id: str, job_id: str) -> dict[str, Any]:
    job = jobs_service.get_job(session, tenant_id, job_id)
    report = job.report or {}
    model = models_repository.get(session, job.model_id) if job.model_id else None
    log_lines = job_logs_repository.lines_after(session, job.id, 0, LOG_LINES_ON_PAGE)
    return {
        "elapsed_s": _elapsed_seconds(job),
        "steps": step_progress(job),
        "log_lines": log_lines,
        "log_after": log_lines[-1].id if log_lines else 0,
        "log_cut": len(log_lines) == LOG_LINES_ON_PAGE,
        "job": job,
        "model": model,
        "report": report,
        "finished": job.status in FINISHED_STATUSES,
        "charts": all_charts(report),
        # (step number, step report) of each federated step: its rounds, sites and their energy.
        "federated_steps": [(index, step) for index, step in enumerate(report.get("steps", []), start=1)
                            if step.get("technique") == "federated"],
    }


def _elapsed_seconds(job: Job) -> float | None:
    # SQLite hands back times without a zone; every stored time is UTC.
    start = as_utc(job.started_at)
    if start is None:
        return None
    return ((as_utc(job.finished_at) or utcnow()) - start).total_seconds()


def models_page(session: Session, tenant_id: str) -> dict[str, Any]:
    return {"kind": MODELS, "items": models_repository.list_all(session, tenant_id)}


def datasets_page(session: Session, tenant_id: str) -> dict[str, Any]:
    return {"kind": DATASETS, "items": datasets_repository.list_all(session, tenant_id)}


def new_job_page(session: Session, tenant_id: str) -> dict[str, Any]:
    return {
        "models": models_repository.list_all(session, tenant_id),
        # A site-held dataset is refused as a job's dataset: its rows are at the site.
        "datasets": [dataset for dataset in datasets_repository.list_all(session, tenant_id) if dataset.site is None],
        "devices": DEVICES,
        "targets": TARGETS,
        # The preset buttons come from GET /v1/recipes/presets (recipe.js): one source of truth.
        "objectives": get_args(Objective),
    }


def labelling_page(session: Session, tenant_id: str, dataset_id: str, suggestion_id: str | None) -> dict[str, Any]:
    """The dataset version, the models a suggestion can use, and the chosen suggestion (if any) to label."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    suggestion = None
    if suggestion_id is not None:
        suggestion = SuggestionOut.of(suggestions.get_suggestion(session, tenant_id, dataset_id, suggestion_id))
    return {
        "dataset": dataset,
        "versions": datasets_repository.lineage(session, tenant_id, dataset.lineage_id),
        "models": [model for model in models_repository.list_all(session, tenant_id)
                   if model.task in suggestions.SUGGESTION_TASKS],
        "suggestion": suggestion,
        "recent": datasets_repository.suggestions_for(session, tenant_id, dataset_id, limit=5),
    }
