"""create_app(): the routers, the dashboard, and one error handler giving every 4xx the same shape."""

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.artifacts.router import router as artifacts_router
from app.config import get_settings
from app.core.errors import AppError
from app.core.storage import check_storage, storage_for
from app.db.session import session_scope
from app.maintenance.sweep import sweep_orphans
from app.core.problems import app_error_response, problem_response, problem_responses, use_problem_media_type
from app.core.problems import router as problems_router
from app.dashboard.router import STATIC_DIR as DASHBOARD_STATIC_DIR
from app.dashboard.router import LoginRequired
from app.dashboard.router import router as dashboard_router
from app.datasets.router import router as datasets_router
from app.health.router import router as health_router
from app.job_logs.router import router as job_logs_router
from app.jobs.router import router as jobs_router
from app.metrics.router import router as metrics_router
from app.models.router import router as models_router
from app.reports.router import router as reports_router
from app.recipes.router import router as recipes_router
from app.sites.router import router as sites_router
from app.techniques.router import router as techniques_router
from app.webhooks.router import router as webhooks_router
from workers.engine.registry import technique_names

logger = logging.getLogger(__name__)


def _location(loc) -> str:  # noqa: ANN001
    return ".".join(str(part) for part in loc)


async def handle_app_error(request: Request, exc: AppError) -> JSONResponse:
    return app_error_response(exc, request.url.path)


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown path, a wrong method) in the same shape as ours."""
    return problem_response(exc.status_code, str(exc.detail), request.url.path, headers=exc.headers)


async def handle_login_required(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/login?{urlencode({'next': exc.next_path})}", status_code=303)


def allowed_values(expected: str) -> list[str]:
    """pydantic says "'a', 'b' or 'c'"; the problem's `allowed` is a list: ["a", "b", "c"]."""
    return re.findall(r"'([^']*)'", expected) or [expected]


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        entry = {"loc": list(error["loc"]), "msg": error["msg"]}
        expected = (error.get("ctx") or {}).get("expected")
        if expected:
            entry["allowed"] = allowed_values(str(expected))
        errors.append(entry)
    summary = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors)
    return problem_response(422, f"Invalid request: {summary}", request.url.path, errors=errors)


async def handle_unusable_value(request: Request, exc: DataError) -> JSONResponse:
    """A value the database cannot hold or compare (a NUL byte in a text, a number out of range):
    the request's fault, so a 422, not a 500."""
    reason = str(getattr(exc, "orig", exc)).splitlines()[0]
    return problem_response(422, f"A value in the request cannot be used: {reason}.", request.url.path)


async def handle_database_down(request: Request, exc: OperationalError) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return problem_response(
        503, "The database is unavailable; retry shortly.", request.url.path, headers={"Retry-After": "5"}
    )


async def handle_database_busy(request: Request, exc: PoolTimeoutError) -> JSONResponse:
    """Every pooled connection stayed in use for COMPRESSO_DATABASE_POOL_TIMEOUT_SECONDS: an overload
    that passes, so a 503 the client can retry, not a 500."""
    logger.warning("no free database connection: %s", exc)
    return problem_response(
        503, "The API's database connections are all busy; retry shortly.", request.url.path,
        headers={"Retry-After": "5"},
    )


def startup_sweep() -> None:
    """Removes what an API or worker killed mid-write left behind; never stops the API from starting."""
    settings = get_settings()
    try:
        with session_scope() as session:
            sweep_orphans(session, storage_for(settings), settings.orphan_idle_seconds)
    except Exception:  # noqa: BLE001 - e.g. the database is down: the next start sweeps
        logger.warning("the startup sweep failed", exc_info=True)


def keep_startup_objects_out_of_collections() -> None:
    """Moves every object alive after start-up to the collector's permanent generation: they live as
    long as the process, and a full collection that walked them all paused an API process for about
    100 ms at a time under load (measured with gc.callbacks while benchmarks/load.py ran)."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(check_storage, get_settings())
    await run_in_threadpool(startup_sweep)
    # The technique configs that validate recipes: loaded now, not inside the first submit.
    await run_in_threadpool(technique_names)
    keep_startup_objects_out_of_collections()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="compresso",
        version="0.1.0",
        description="Model compression as a service: upload a Hugging Face model, pick a recipe, "
        "get back a smaller model that loads in standard runtimes, with a measured report.",
    )
    app.add_exception_handler(AppError, handle_app_error)
    app.add_exception_handler(LoginRequired, handle_login_required)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(OperationalError, handle_database_down)
    app.add_exception_handler(PoolTimeoutError, handle_database_busy)
    app.add_exception_handler(DataError, handle_unusable_value)
    # Tenant data: a key may be required, ids may be unknown, parameters may be invalid, the database may be down.
    for router in (
        models_router, datasets_router, sites_router, jobs_router, job_logs_router, artifacts_router, reports_router,
        webhooks_router,
    ):
        app.include_router(router, responses=problem_responses(400, 401, 404, 422, 503))
    for router in (
        techniques_router, recipes_router, health_router, metrics_router, problems_router, dashboard_router
    ):
        app.include_router(router)
    generate_openapi = app.openapi
    app.openapi = lambda: use_problem_media_type(generate_openapi())
    app.mount("/static", StaticFiles(directory=DASHBOARD_STATIC_DIR), name="dashboard_static")
    return app
