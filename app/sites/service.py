"""Rules for sites: a site registers the datasets it keeps (their metadata only), and the tenant sees
its sites and whether each one's worker is alive."""

from datetime import timedelta

from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.config import Settings
from app.core.errors import Invalid
from app.datasets import repository as datasets_repository
from app.datasets.orm import Dataset
from app.datasets.schemas import DatasetOut
from app.db.base import new_id, utcnow
from app.idempotency import service as idempotency
from app.sites import repository
from app.sites.paths import site_storage_key
from app.sites.schemas import SITE_NAME_RULE, SiteDatasetIn, SiteOut
from app.tenants.orm import Tenant
from app.worker_nodes import repository as worker_nodes
from workers.engine.federated.config import SITE_NAME, site_queue

REGISTER_ENDPOINT = "POST /v1/sites/{site}/datasets"


def checked_site(site: str) -> str:
    if not SITE_NAME.fullmatch(site):
        raise Invalid(f"Site {site!r}: {SITE_NAME_RULE}.", errors=[{"loc": ["path", "site"], "msg": SITE_NAME_RULE}])
    return site


def register_dataset(
    session: Session, tenant: Tenant, site: str, body: SiteDatasetIn, idempotency_key: str | None
) -> Dataset | JSONResponse:
    """The new site-held dataset; or, for a retry with a used Idempotency-Key, the first response."""
    checked_site(site)
    return idempotency.create_once(
        session, tenant.id, REGISTER_ENDPOINT, idempotency_key, {"site": site, **body.model_dump()}, 201,
        lambda: add_site_dataset(session, tenant.id, site, body),
        lambda dataset: DatasetOut.model_validate(dataset).model_dump(mode="json"),
    )


def add_site_dataset(session: Session, tenant_id: str, site: str, body: SiteDatasetIn) -> Dataset:
    """A first version whose rows stay at the site: a row here, and no file in central storage."""
    dataset_id = new_id()
    return datasets_repository.add(
        session,
        Dataset(
            id=dataset_id, tenant_id=tenant_id, name=body.name, filename=body.filename, num_rows=body.num_rows,
            num_labelled=body.num_labelled, columns=body.columns, size_bytes=body.size_bytes, sha256=body.sha256,
            storage_key=site_storage_key(site, body.sha256, body.filename), version=1, parent_id=None,
            lineage_id=dataset_id, site=site,
        ),
    )


def list_sites(session: Session, settings: Settings, tenant_id: str) -> list[SiteOut]:
    seen_after = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds)
    live_queues = {queue for node in worker_nodes.alive(session, seen_after) for queue in node.queues.split(",")}
    return [
        SiteOut(site=site, datasets=count, queue=site_queue(site), worker_alive=site_queue(site) in live_queues)
        for site, count in repository.dataset_counts(session, tenant_id)
    ]
