"""Every query on the datasets table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.orm import Dataset


def get(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_all(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def delete(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()
