"""Every query of the sites domain: sites are known by the datasets registered as held by them."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.datasets.orm import Dataset


def dataset_counts(session: Session, tenant_id: str) -> list[tuple[str, int]]:
    """(site, how many of the tenant's datasets it holds), by site name."""
    query = (
        select(Dataset.site, func.count())
        .where(Dataset.tenant_id == tenant_id, Dataset.site.is_not(None))
        .group_by(Dataset.site)
        .order_by(Dataset.site)
    )
    return [(site, count) for site, count in session.execute(query)]
