"""HTTP routes for compression jobs."""

from typing import Any, Literal

from fastapi import APIRouter, status

from app.core.problems import problem_responses
from app.core.pagination import Page, PageDep
from app.core.deps import SessionDep, SettingsDep, StorageDep
from app.core.routing import SessionRoute
from app.idempotency import service as idempotency
from app.idempotency.service import IdempotencyKey
from app.jobs import repository, service
from app.jobs.schemas import JobCreate, JobOut
from app.tenants.auth import TenantDep

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]

router = APIRouter(route_class=SessionRoute, prefix="/v1/jobs", tags=["jobs"])
SUBMIT_ENDPOINT = "POST /v1/jobs"


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses=problem_responses(429))
def submit_job(
    body: JobCreate, session: SessionDep, settings: SettingsDep, tenant: TenantDep, idempotency_key: IdempotencyKey = None
):
    """Validates the recipe and queues the job; it runs on a worker in the background."""
    return idempotency.create_once(
        session, tenant.id, SUBMIT_ENDPOINT, idempotency_key, body.model_dump(mode="json"), status.HTTP_202_ACCEPTED,
        create=lambda: JobOut.from_job(service.create_job(session, settings, tenant, body)),
        serialize=lambda job: job.model_dump(mode="json"),
    )


@router.get("", response_model=Page[JobOut])
def list_jobs(session: SessionDep, tenant: TenantDep, page: PageDep, status: JobStatus | None = None):
    """Newest first, a page at a time; filter by status and creation time."""
    jobs, next_cursor = repository.list_page(session, tenant.id, page, status)
    return Page[JobOut](items=[JobOut.from_job(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, tenant: TenantDep):
    """The job's status, progress per step, error, timestamps and artifacts."""
    return JobOut.from_job(service.get_job(session, tenant.id, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problem_responses(409))
def cancel_job(job_id: str, session: SessionDep, storage: StorageDep, tenant: TenantDep):
    """A queued job never starts; a running one is stopped within seconds and its partial files removed.
    409 when the job has already finished."""
    return JobOut.from_job(service.cancel_job(session, storage, tenant.id, job_id))


@router.get("/{job_id}/report", responses=problem_responses(409))
def get_report(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """The measured report: size, latency and quality before and after, ratios, and environment."""
    return service.get_report(session, tenant.id, job_id)
