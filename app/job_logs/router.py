"""HTTP route for a job's log, read while the job runs or after it ended."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.deps import SessionDep
from app.core.routing import SessionRoute
from app.job_logs import repository
from app.job_logs.schemas import JobLogLineOut, JobLogPage
from app.jobs import service as jobs_service
from app.tenants.auth import TenantDep

router = APIRouter(route_class=SessionRoute, prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}/logs", response_model=JobLogPage)
def get_job_logs(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    after: Annotated[int, Query(ge=0, description="Return only lines with an id above this cursor.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
):
    """The job's log lines in order: the worker's own events and the engine's log, per attempt."""
    jobs_service.get_job(session, tenant.id, job_id)  # 404 for an unknown job, or another tenant's
    lines = repository.lines_after(session, job_id, after, limit)
    return JobLogPage(
        lines=[JobLogLineOut.model_validate(line) for line in lines],
        next_after=lines[-1].id if lines else after,
    )
