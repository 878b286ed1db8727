"""Every query on the models table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import PageRequest, paginate
from app.models.orm import Model
from app.tenants import scoping


def get(session: Session, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def get_owned(session: Session, tenant_id: str, model_id: str) -> Model | None:
    return scoping.get_owned(session, Model, tenant_id, model_id)


def list_page(session: Session, tenant_id: str, page: PageRequest) -> tuple[list[Model], str | None]:
    return paginate(session, select(Model).where(Model.tenant_id == tenant_id), Model, page)


def list_all(session: Session, tenant_id: str) -> list[Model]:
    query = select(Model).where(Model.tenant_id == tenant_id).order_by(Model.created_at.desc())
    return list(session.scalars(query))


def add(session: Session, model: Model) -> Model:
    session.add(model)
    session.flush()
    return model


def delete(session: Session, model: Model) -> None:
    session.delete(model)
    session.flush()
