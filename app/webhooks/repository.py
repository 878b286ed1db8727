"""Every query on the webhook deliveries table."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import PageRequest, paginate
from app.webhooks.orm import PENDING, WebhookDelivery


def get(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id)


def list_page(
    session: Session, tenant_id: str, page: PageRequest, job_id: str | None = None, status: str | None = None
) -> tuple[list[WebhookDelivery], str | None]:
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return paginate(session, query, WebhookDelivery, page)


def overdue(session: Session, due_before: datetime) -> list[WebhookDelivery]:
    """Pending deliveries whose next try is long past: their message was lost."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at < due_before
    )
    return list(session.scalars(query))
