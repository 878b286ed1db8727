"""The route class of every router whose endpoints use the request's database session.

FastAPI runs a sync endpoint in a worker thread and then validates its answer in another one,
while the session's dependency commits only after that. A request would hold its pooled
connection while it waits for the second thread, and under a flood every thread can be waiting
for a connection that such a request holds: nothing moves until the pool times out. So here a
sync endpoint runs in one worker thread that also ends the session's transaction, and its answer
is validated on the event loop: a request holds a connection only while a thread runs for it, and
takes one thread hop instead of two.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db.session import release_connection


def _call_and_release(endpoint: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    result = endpoint(**kwargs)
    # Not when it raised: the session's dependency then rolls back.
    for value in kwargs.values():
        if isinstance(value, Session):
            release_connection(value)
    return result


def in_one_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The sync endpoint as a coroutine that runs it, then commits every session it was given, in a
    single worker thread."""

    @functools.wraps(endpoint)  # FastAPI reads the parameters from the wrapped endpoint's signature
    async def call(**kwargs: Any) -> Any:
        return await run_in_threadpool(_call_and_release, endpoint, kwargs)

    return call


class SessionRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # An async endpoint sends its database work to threads itself, and ends each transaction
        # where a wait follows (see app.tenants.limits.checked_before_streaming).
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = in_one_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)
