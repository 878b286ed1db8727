"""Every query on the tenant totals table."""

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.reports.orm import TOTAL_FIELDS, TenantTotals


def get(session: Session, tenant_id: str) -> TenantTotals | None:
    return session.get(TenantTotals, tenant_id)


def add(session: Session, tenant_id: str, deltas: dict[str, float]) -> None:
    """Adds to the tenant's totals in place (UPDATE x = x + d), so concurrent workers never lose a job."""
    row = get(session, tenant_id)
    if row is None:
        try:
            with session.begin_nested():
                row = TenantTotals(tenant_id=tenant_id, **dict.fromkeys(TOTAL_FIELDS, 0))
                session.add(row)
        except IntegrityError:
            row = get(session, tenant_id)  # another worker created it first
    columns = {name: getattr(TenantTotals, name) + deltas[name] for name in TOTAL_FIELDS if deltas.get(name)}
    if columns:
        statement = update(TenantTotals).where(TenantTotals.tenant_id == tenant_id).values(**columns)
        session.execute(statement.execution_options(synchronize_session=False))
        if row is not None:
            session.expire(row)
