"""HTTP route for the sustainability summary across jobs."""

from datetime import datetime

from fastapi import APIRouter, Query

from app.db.base import as_utc
from app.core.deps import SessionDep
from app.tenants.auth import TenantDep
from app.core.errors import Invalid
from app.core.routing import SessionRoute
from app.reports import service
from app.reports.schemas import Summary

router = APIRouter(route_class=SessionRoute, prefix="/v1/reports", tags=["reports"])


@router.get("/summary", response_model=Summary)
def get_summary(
    session: SessionDep,
    tenant: TenantDep,
    since: datetime | None = Query(None, description="Jobs created at or after this time (ISO 8601)."),
    until: datetime | None = Query(None, description="Jobs created before this time (ISO 8601)."),
):
    """The jobs of a time window, the energy and CO2 they used, and their models' projected savings."""
    since, until = as_utc(since), as_utc(until)
    if since is not None and until is not None and since >= until:
        raise Invalid("'since' must be earlier than 'until'.")
    return service.summary(session, tenant.id, since, until)
