"""HTTP routes for sites: the datasets they hold, registered by metadata alone."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from app.core.deps import SessionDep, SettingsDep
from app.core.routing import SessionRoute
from app.datasets.schemas import DatasetOut
from app.idempotency.service import IdempotencyKey
from app.sites import service
from app.sites.schemas import SITE_NAME_RULE, SiteDatasetIn, SiteOut
from app.tenants.auth import TenantDep

router = APIRouter(route_class=SessionRoute, prefix="/v1/sites", tags=["sites"])
SiteName = Annotated[str, Path(description=f"The site's name: {SITE_NAME_RULE}.")]


@router.get("", response_model=list[SiteOut])
def list_sites(session: SessionDep, settings: SettingsDep, tenant: TenantDep):
    """The sites that hold the tenant's datasets, by name: how many each holds, and whether its worker is alive."""
    return service.list_sites(session, settings, tenant.id)


@router.post("/{site}/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def register_site_dataset(
    site: SiteName, body: SiteDatasetIn, session: SessionDep, tenant: TenantDep, idempotency_key: IdempotencyKey = None
):
    """Registers a dataset that the site keeps: its name, hash and shape, never its rows (no file is sent, and
    none is stored here). `compresso site add-dataset` on the site's host checks the file and calls this.
    Federated steps name it in their `sites`; it cannot be a job's dataset_id, labelled or revised here."""
    return service.register_dataset(session, tenant, site, body, idempotency_key)
