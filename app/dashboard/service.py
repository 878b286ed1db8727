"""What the dashboard pages show, gathered through the same repositories and services as the API."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.dashboard.charts import all_charts
from app.datasets import repository as datasets_repository
from app.db.base import utcnow
from app.jobs import repository as jobs_repository
from app.jobs import service as jobs_service
from app.jobs.orm import FINISHED_STATUSES, SUCCEEDED, Job
from app.models import repository as models_repository
from app.reports import service as reports_service

RECENT_JOBS = 20


@dataclass(frozen=True)
class Totals:
    models_compressed: int
    bytes_saved: int
    energy_spent_kwh: float
    co2e_spent_g: float
    energy_saved_kwh_per_day: float


def _bytes_saved(job: Job) -> int:
    report = job.report or {}
    try:
        return max(0, report["original"]["size_bytes"] - report["result"]["size_bytes"])
    except (KeyError, TypeError):
        return 0


def overview(session: Session) -> dict[str, Any]:
    jobs = jobs_repository.list_all(session)
    summary = reports_service.summary(session, None, None)
    succeeded = [job for job in jobs if job.status == SUCCEEDED]
    return {
        "jobs": jobs[:RECENT_JOBS],
        "models": models_repository.list_all(session),
        "datasets": datasets_repository.list_all(session),
        "totals": Totals(
            models_compressed=len(succeeded),
            bytes_saved=sum(_bytes_saved(job) for job in succeeded),
            energy_spent_kwh=summary.energy.energy_kwh,
            co2e_spent_g=summary.energy.co2e_g,
            energy_saved_kwh_per_day=summary.projected_savings.kwh_per_day,
        ),
    }


def job_page(session: Session, job_id: str) -> dict[str, Any]:
    job = jobs_service.get_job(session, job_id)
    report = job.report or {}
    model = models_repository.get(session, job.model_id) if job.model_id else None
    return {
        "elapsed_s": _elapsed_seconds(job),
        "job": job,
        "model": model,
        "report": report,
        "finished": job.status in FINISHED_STATUSES,
        "charts": all_charts(report),
    }


def _elapsed_seconds(job: Job) -> float | None:
    # SQLite hands back times without a zone; every stored time is UTC.
    start = reports_service.as_utc(job.started_at)
    if start is None:
        return None
    return ((reports_service.as_utc(job.finished_at) or utcnow()) - start).total_seconds()


