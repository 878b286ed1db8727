"""Liveness and readiness probes."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app.db.session import get_engine
from workers.celery_app import celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


def _check_database() -> str | None:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the message is reported
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_broker() -> str | None:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


@router.get("/readyz", responses={503: {"description": "The database or the broker is unreachable."}})
async def readyz():
    """The database and the broker are reachable; 503 names the one that is not."""
    checks = {"database": await run_in_threadpool(_check_database), "broker": await run_in_threadpool(_check_broker)}
    body = {name: ("ok" if error is None else error) for name, error in checks.items()}
    ready = all(error is None for error in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **body}, status_code=200 if ready else 503)
