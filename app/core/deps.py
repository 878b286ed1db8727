"""Typed dependencies declared once, for routers to use as annotations.

The ones that do no I/O are `async def`, so FastAPI runs them on the event loop rather than
sending each to a worker thread and back: a request's thread hops cost CPU that a busy API
does not have.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings, get_settings
from app.core.storage import Storage, storage_for
from app.db.session import AFTER_COMMIT, AFTER_ROLLBACK, commit, get_sessionmaker, rollback


async def request_session() -> AsyncIterator[Session]:
    """The request's unit of work. Creating a session touches no database; committing, rolling back
    or closing one that still holds a transaction does, in a worker thread. An endpoint usually ends
    its transaction itself (app.core.routing), leaving nothing to do here but forget the session."""
    session = get_sessionmaker()()
    try:
        yield session
        if session.in_transaction() or session.info.get(AFTER_COMMIT):
            await run_in_threadpool(commit, session)
    except BaseException:
        await run_in_threadpool(rollback, session)
        raise
    finally:
        if session.in_transaction() or session.info.get(AFTER_ROLLBACK):
            await run_in_threadpool(session.close)
        else:
            session.close()


async def settings_dependency() -> Settings:
    return get_settings()


def storage_dependency() -> Storage:  # makes its folders: a worker thread
    return storage_for(get_settings())


# scope="function": the commit happens before the response is sent, so a failed commit is an error answer.
SessionDep = Annotated[Session, Depends(request_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_dependency)]
StorageDep = Annotated[Storage, Depends(storage_dependency)]
