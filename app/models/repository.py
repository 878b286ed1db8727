"""Every query on the models table."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.orm import Model


def get(session: Session, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def list_all(session: Session) -> list[Model]:
    return list(session.scalars(select(Model).order_by(Model.created_at.desc())))


def add(session: Session, model: Model) -> Model:
    session.add(model)
    session.flush()
    return model


def delete(session: Session, model: Model) -> None:
    session.delete(model)
    session.flush()
