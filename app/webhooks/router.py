"""HTTP routes for webhook deliveries and the tenant's signing secret."""

import secrets
from typing import Literal

from fastapi import APIRouter

from app.core.deps import SessionDep
from app.core.pagination import Page, PageDep
from app.core.routing import SessionRoute
from app.tenants.auth import TenantDep
from app.webhooks import repository
from app.webhooks.schemas import DeliveryOut, WebhookSecret

router = APIRouter(route_class=SessionRoute, prefix="/v1/webhooks", tags=["webhooks"])


@router.get("/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(
    session: SessionDep,
    tenant: TenantDep,
    page: PageDep,
    job_id: str | None = None,
    status: Literal["pending", "delivered", "failed"] | None = None,
):
    """Every webhook delivery of the tenant's jobs, newest first: status, tries, the receiver's last answer."""
    deliveries, next_cursor = repository.list_page(session, tenant.id, page, job_id, status)
    return Page[DeliveryOut](items=[DeliveryOut.model_validate(d) for d in deliveries], next_cursor=next_cursor)


@router.get("/secret", response_model=WebhookSecret)
def get_secret(tenant: TenantDep):
    """The secret that signs this tenant's deliveries."""
    return WebhookSecret(secret=tenant.webhook_secret)


@router.post("/secret/rotate", response_model=WebhookSecret)
def rotate_secret(session: SessionDep, tenant: TenantDep):
    """A new signing secret, used from the next delivery on; the old one stops verifying."""
    tenant.webhook_secret = secrets.token_hex(32)
    session.flush()
    return WebhookSecret(secret=tenant.webhook_secret)
