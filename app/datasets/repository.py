"""Every query on the datasets table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import PageRequest, paginate
from app.datasets.orm import Dataset
from app.tenants import scoping


def get(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_owned(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return scoping.get_owned(session, Dataset, tenant_id, dataset_id)


def list_page(session: Session, tenant_id: str, page: PageRequest) -> tuple[list[Dataset], str | None]:
    return paginate(session, select(Dataset).where(Dataset.tenant_id == tenant_id), Dataset, page)


def list_all(session: Session, tenant_id: str) -> list[Dataset]:
    query = select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.created_at.desc())
    return list(session.scalars(query))


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def delete(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()
