"""Server-rendered dashboard pages over the same services as the API."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from app.core.deps import SessionDep
from app.dashboard import service

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
# Charts are SVG built by app.dashboard.charts, which escapes every piece of user text itself.
templates.env.filters["svg"] = Markup
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep):
    return templates.TemplateResponse(request, "overview.html", service.overview(session))


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, session: SessionDep):
    return templates.TemplateResponse(request, "models.html", service.models_page(session))


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request, session: SessionDep):
    return templates.TemplateResponse(request, "datasets.html", service.datasets_page(session))


# Declared before /jobs/{job_id}, which would otherwise take "new" for an id.
@router.get("/jobs/new", response_class=HTMLResponse)
def new_job(request: Request, session: SessionDep):
    return templates.TemplateResponse(request, "new_job.html", service.new_job_page(session))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str, session: SessionDep):
    return templates.TemplateResponse(request, "job.html", service.job_page(session, job_id))
