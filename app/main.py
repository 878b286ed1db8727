"""create_app(): the routers, the dashboard, and one error handler giving every 4xx the same shape."""

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from app.artifacts.router import router as artifacts_router
from app.core.errors import AppError
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
from app.techniques.router import router as techniques_router

logger = logging.getLogger(__name__)


def _location(loc) -> str:  # noqa: ANN001
    return ".".join(str(part) for part in loc)


async def handle_app_error(_request: Request, exc: AppError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "errors": exc.errors}, status_code=exc.status_code, headers=exc.headers)


async def handle_login_required(_request: Request, exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/login?{urlencode({'next': exc.next_path})}", status_code=303)


async def handle_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        entry = {"loc": list(error["loc"]), "msg": error["msg"]}
        expected = (error.get("ctx") or {}).get("expected")
        if expected:
            entry["allowed"] = expected
        errors.append(entry)
    summary = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": f"Invalid request: {summary}", "errors": errors}, status_code=422)


async def handle_database_down(_request: Request, exc: OperationalError) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "The database is unavailable; retry shortly.", "errors": []},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="compresso",
        version="0.1.0",
        description="Model compression as a service: upload a Hugging Face model, pick a recipe, "
        "get back a smaller model that loads in standard runtimes, with a measured report.",
    )
    app.add_exception_handler(AppError, handle_app_error)
    app.add_exception_handler(LoginRequired, handle_login_required)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(OperationalError, handle_database_down)
    for router in (
        models_router,
        datasets_router,
        jobs_router,
        job_logs_router,
        artifacts_router,
        techniques_router,
        reports_router,
        health_router,
        metrics_router,
        dashboard_router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=DASHBOARD_STATIC_DIR), name="dashboard_static")
    return app
