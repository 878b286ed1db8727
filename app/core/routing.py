"""The route class of every router whose endpoints use the request's database session.

FastAPI runs each sync dependency and a sync endpoint in worker threads of their own, then
validates the answer in another, while the session's dependency commits only after that. A
request took several thread hops (each costs CPU and a wait for the GIL on a busy API), and held
its pooled connection while it waited for the next thread: under a flood every thread could be
waiting for a connection that such a request held, and nothing moved until the pool timed out.

So here a request's database work happens in one worker thread: the dependencies that need the
database are deferred (they return a `Deferred`, resolved in that thread with the request's
session), then the endpoint runs, then the session's transaction ends. The answer is validated
on the event loop. A request holds a connection only while a thread runs for it.
"""

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db.session import release_connection, session_scope


class Deferred(ABC):
    """What a dependency returns when its answer needs the database: the route resolves it before
    the endpoint runs. It has none of the answer's attributes, so an endpoint on a route of another
    class that received one unresolved fails at once instead of skipping the check."""

    @abstractmethod
    def resolve(self, session: Session) -> Any:
        """The dependency's answer, read with the request's session in the endpoint's thread."""


def _resolve_deferred(kwargs: dict[str, Any]) -> None:
    session = next((value for value in kwargs.values() if isinstance(value, Session)), None)
    for name, value in kwargs.items():
        if isinstance(value, Deferred):
            if session is None:
                with session_scope() as own_session:
                    kwargs[name] = value.resolve(own_session)
            else:
                kwargs[name] = value.resolve(session)


def _release_sessions(kwargs: dict[str, Any]) -> None:
    for value in kwargs.values():
        if isinstance(value, Session):
            release_connection(value)


def _call_sync(endpoint: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    _resolve_deferred(kwargs)
    result = endpoint(**kwargs)
    _release_sessions(kwargs)  # not when it raised: the session's dependency then rolls back
    return result


def _resolve_then_release(kwargs: dict[str, Any]) -> None:
    _resolve_deferred(kwargs)
    _release_sessions(kwargs)


def in_one_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A sync endpoint as a coroutine that resolves its deferred dependencies, runs it and commits
    its session, all in a single worker thread."""

    @functools.wraps(endpoint)  # FastAPI reads the parameters from the wrapped endpoint's signature
    async def call(**kwargs: Any) -> Any:
        return await run_in_threadpool(_call_sync, endpoint, kwargs)

    return call


def resolving_first(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """An async endpoint, called once its deferred dependencies are resolved in a worker thread
    that then ends the session's transaction: the endpoint sends its own database work to threads,
    and may wait long in between (a streamed upload)."""

    @functools.wraps(endpoint)
    async def call(**kwargs: Any) -> Any:
        if any(isinstance(value, Deferred) for value in kwargs.values()):
            await run_in_threadpool(_resolve_then_release, kwargs)
        return await endpoint(**kwargs)

    return call


class SessionRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # A router included in another may copy its routes with this class: wrap once.
        if not getattr(endpoint, "resolves_deferred", False):
            endpoint = resolving_first(endpoint) if inspect.iscoroutinefunction(endpoint) else in_one_thread(endpoint)
            endpoint.resolves_deferred = True
        super().__init__(path, endpoint, **kwargs)
