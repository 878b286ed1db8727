"""Database engine and session factory. The caller of a unit of work commits; services only flush."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


def make_engine(url: str) -> Engine:
    settings = get_settings()
    pool = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout_seconds,
    }
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            # WAL lets the API read while the worker writes; foreign keys are off by default in SQLite.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # UTF8 whatever the database's encoding: on a SQL_ASCII database (a C-locale cluster's default) psycopg
    # would return text as bytes, and SQLAlchemy fails on the server's version string before the first query.
    return create_engine(url, pool_pre_ping=True, connect_args={"client_encoding": "utf8"}, **pool)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


AFTER_COMMIT = "after_commit"
AFTER_ROLLBACK = "after_rollback"


def run_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Defers work (such as enqueueing a task) until the transaction that made its rows visible commits."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def run_after_rollback(session: Session, callback: Callable[[], None]) -> None:
    """Undoes a side effect outside the database (such as a stored file) if the transaction fails."""
    session.info.setdefault(AFTER_ROLLBACK, []).append(callback)


def commit(session: Session) -> None:
    session.commit()
    session.info.pop(AFTER_ROLLBACK, None)
    for callback in session.info.pop(AFTER_COMMIT, []):
        callback()


def rollback(session: Session) -> None:
    session.rollback()
    session.info.pop(AFTER_COMMIT, None)
    for callback in session.info.pop(AFTER_ROLLBACK, []):
        callback()


def release_connection(session: Session) -> None:
    """Ends the session's transaction so that its connection goes back to the pool; the session stays
    usable and its objects loaded (expire_on_commit is off), and its next query takes a connection again.

    For a step after which a request waits: for a free thread (a sync dependency is followed by the
    endpoint in another thread) or for a body to stream in. A request holding a connection while it
    waits for a thread, when every thread waits for a connection, starves the pool until it times out.
    """
    commit(session)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commits when the block succeeds, rolls back when it raises."""
    session = get_sessionmaker()()
    try:
        yield session
        commit(session)
    except BaseException:
        rollback(session)
        raise
    finally:
        session.close()
