"""Reading rows on behalf of a tenant: another tenant's row is treated as absent, never as forbidden,
so an API answer cannot reveal that an id exists."""

from typing import TypeVar

from sqlalchemy.orm import Session

from app.tenants.orm import TenantOwnedMixin

Owned = TypeVar("Owned", bound=TenantOwnedMixin)


def get_owned(session: Session, entity: type[Owned], tenant_id: str, entity_id: str) -> Owned | None:
    row = session.get(entity, entity_id)
    return row if row is not None and row.tenant_id == tenant_id else None
