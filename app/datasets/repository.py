"""Every query on the datasets table."""

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.core.pagination import PageRequest, paginate
from app.datasets.orm import SUGGESTION_QUEUED, SUGGESTION_RUNNING, Dataset, LabelSuggestion
from app.tenants import scoping
from app.worker_nodes.orm import WorkerNode


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


def latest_version(session: Session, lineage_id: str) -> int:
    return session.scalar(select(func.max(Dataset.version)).where(Dataset.lineage_id == lineage_id)) or 0


def lineage(session: Session, tenant_id: str, lineage_id: str) -> list[Dataset]:
    """Every version of one dataset, oldest first."""
    query = select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.lineage_id == lineage_id)
    return list(session.scalars(query.order_by(Dataset.version)))


def add_suggestion(session: Session, suggestion: LabelSuggestion) -> LabelSuggestion:
    session.add(suggestion)
    session.flush()
    return suggestion


def get_suggestion(session: Session, suggestion_id: str) -> LabelSuggestion | None:
    return session.get(LabelSuggestion, suggestion_id)


def suggestions_for(session: Session, tenant_id: str, dataset_id: str, limit: int = 20) -> list[LabelSuggestion]:
    """The dataset's latest suggestions, newest first."""
    query = select(LabelSuggestion).where(
        LabelSuggestion.tenant_id == tenant_id, LabelSuggestion.dataset_id == dataset_id
    )
    return list(session.scalars(query.order_by(LabelSuggestion.created_at.desc()).limit(limit)))


def lost_suggestions(session: Session, stale_before: datetime) -> list[LabelSuggestion]:
    """Running suggestions whose worker has not sent a heartbeat since `stale_before` (or has no row at all)."""
    query = (
        select(LabelSuggestion)
        .outerjoin(WorkerNode, WorkerNode.name == LabelSuggestion.worker)
        .where(
            LabelSuggestion.status == SUGGESTION_RUNNING,
            LabelSuggestion.started_at < stale_before,
            or_(WorkerNode.name.is_(None), WorkerNode.last_seen_at < stale_before),
        )
    )
    return list(session.scalars(query))


def queued_suggestions(session: Session, created_before: datetime) -> list[LabelSuggestion]:
    """Suggestions still waiting for a worker: the cpu queue should hold their messages."""
    query = select(LabelSuggestion).where(
        LabelSuggestion.status == SUGGESTION_QUEUED, LabelSuggestion.created_at < created_before
    )
    return list(session.scalars(query))
