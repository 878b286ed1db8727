"""Typed dependencies declared once, for routers to use as annotations."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.core.storage import Storage, get_storage
from app.db.session import session_scope


def request_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def settings_dependency() -> Settings:
    return get_settings()


def storage_dependency() -> Storage:
    return get_storage(get_settings().storage_dir)


# scope="function": the commit happens before the response is sent, so a failed commit is an error answer.
SessionDep = Annotated[Session, Depends(request_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_dependency)]
StorageDep = Annotated[Storage, Depends(storage_dependency)]
